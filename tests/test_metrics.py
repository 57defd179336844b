"""AUROC and FPR@95 against brute-force computations on random and tied scores."""
import numpy as np
import pytest

from ross_ood import ood_metrics


def brute_auroc(s_id, s_ood):
    # P(ID score > OOD score) + 1/2 P(tie): the Mann-Whitney form of AUROC
    d = s_id[:, None] - s_ood[None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def brute_fpr95(s_id, s_ood, r=0.95):
    # flag OOD when score <= t; the smallest share of flagged ID among t catching >= r of OOD
    best = 1.0
    for t in np.unique(np.concatenate([s_id, s_ood])):
        if (s_ood <= t).mean() >= r:
            best = min(best, (s_id <= t).mean())
    return best


def brute_fpr95_id(s_id, s_ood, r=0.95):
    # accept when score >= t; the smallest share of accepted OOD among t accepting >= r of ID
    best = 1.0
    for t in np.unique(np.concatenate([s_id, s_ood])):
        if (s_id >= t).mean() >= r:
            best = min(best, (s_ood >= t).mean())
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_against_brute_force(seed, tied):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(20, 120, size=2)
    s_id = rng.normal(1.0, 1.0, n_id)
    s_ood = rng.normal(0.0, 1.0, n_ood)
    if tied:
        s_id, s_ood = np.round(s_id * 2) / 2, np.round(s_ood * 2) / 2
    m = ood_metrics(s_id, s_ood)
    assert m["auroc"] == pytest.approx(brute_auroc(s_id, s_ood), abs=1e-12)
    assert m["fpr95"] == pytest.approx(brute_fpr95(s_id, s_ood), abs=1e-12)
    assert m["fpr95_id"] == pytest.approx(brute_fpr95_id(s_id, s_ood), abs=1e-12)
    for k in ("aupr_in", "aupr_out"):
        assert 0 <= m[k] <= 1


def test_perfect_and_reversed():
    m = ood_metrics([2.0, 3.0, 4.0], [0.0, 1.0])
    assert m["auroc"] == 1.0 and m["fpr95"] == 0.0 and m["fpr95_id"] == 0.0
    assert m["aupr_in"] == pytest.approx(1.0) and m["aupr_out"] == pytest.approx(1.0)
    r = ood_metrics([0.0, 1.0], [2.0, 3.0, 4.0])
    assert r["auroc"] == 0.0 and r["fpr95"] == 1.0


def test_hand_example():
    # ID 1,2,3,4 ; OOD 0,2 : ID above OOD 0: 4 pairs; above OOD 2: 3 and 4, plus a tie -> 6.5 / 8
    m = ood_metrics([1.0, 2.0, 3.0, 4.0], [0.0, 2.0])
    assert m["auroc"] == pytest.approx(6.5 / 8)
    # catching both OOD needs t = 2 -> ID flagged: 1, 2 -> 0.5
    assert m["fpr95"] == pytest.approx(0.5)


def test_large_scores_keep_their_ranking():
    # raw scores far outside [0, 1] (torchmetrics' sigmoid would saturate these)
    s_id = np.array([1000.0, 1000.5, 1001.0])
    s_ood = np.array([999.0, 1000.25])
    assert ood_metrics(s_id, s_ood)["auroc"] == pytest.approx(brute_auroc(s_id, s_ood))


@pytest.mark.parametrize("seed", range(6))
def test_array_formulas_equal_ood_metrics(seed):
    """The bootstrap's rank AUROC and FPR@95 equal the sklearn-based metrics, ties included."""
    from ross_ood.metrics import auroc_by_ranks, fpr_at_recall
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(5, 60, size=2)
    a = rng.integers(0, 8, n_id).astype(float) if seed % 2 else rng.normal(1, 1, n_id)  # ties when seed is odd
    b = rng.integers(0, 8, n_ood).astype(float) if seed % 2 else rng.normal(0, 1, n_ood)
    m = ood_metrics(a, b)
    assert auroc_by_ranks(a, b) == pytest.approx(m["auroc"], abs=1e-12)
    assert fpr_at_recall(a, b) == pytest.approx(m["fpr95"], abs=1e-12)
    stacked = auroc_by_ranks(np.stack([a, a[::-1]]), np.stack([b, b]))  # along the last axis
    assert stacked == pytest.approx([m["auroc"]] * 2)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_n():
    from ross_ood.metrics import ood_records
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 800):
        a, b, c = rng.normal(1, 1, n), rng.normal(0, 1, n), rng.normal(0.5, 1, n)
        recs = ood_records(a, {"b": b, "c": c}, {"b": "near", "c": "far"}, {"mean": ("all", ["b", "c"])},
                           {"detector": "x"}, n_resamples=400, seed=1)
        for r in recs:
            assert r["auroc_lo"] <= r["auroc"] <= r["auroc_hi"] and r["fpr95_lo"] <= r["fpr95"] <= r["fpr95_hi"]
        mean = recs[-1]
        assert mean["ood_set"] == "mean" and mean["auroc"] == pytest.approx((recs[0]["auroc"] + recs[1]["auroc"]) / 2)
        assert mean["n_id"] == n and mean["n_ood"] == 2 * n
        widths.append(recs[0]["auroc_hi"] - recs[0]["auroc_lo"])
    # the interval of an AUROC of about 0.76 narrows like 1/sqrt(n): ~4x from 50 to 800 images
    assert 2.5 < widths[0] / widths[1] < 6.5
    again = ood_records(a, {"b": b, "c": c}, {"b": "near", "c": "far"}, {"mean": ("all", ["b", "c"])},
                        {"detector": "x"}, n_resamples=400, seed=1)
    assert again == recs  # seeded: same numbers


def test_bootstrap_interval_covers_the_true_auroc():
    """Coverage on simulated data with a known AUROC: N(1, 1) vs N(0, 1) has AUROC
    Phi(1 / sqrt(2)) = 0.7602; 95% intervals from 100 + 100 images cover it ~95% of the time."""
    from scipy.stats import norm

    from ross_ood.metrics import bootstrap_intervals
    truth = norm.cdf(1 / np.sqrt(2))
    rng = np.random.default_rng(5)
    hits = 0
    for k in range(60):
        ci = bootstrap_intervals(rng.normal(1, 1, 100), {"o": rng.normal(0, 1, 100)}, {}, n_resamples=300, seed=k)
        hits += ci["o"][0] <= truth <= ci["o"][1]
    assert hits >= 51  # 60 trials at 95% coverage: P(50 or fewer hits) < 0.1%


# ------------------------------------------------------------------ paired comparisons
def test_paired_difference_matches_the_exact_bootstrap_distribution():
    """3 ID and 3 OOD images: all 27 x 27 resamples enumerated by hand give the exact bootstrap
    distribution of AUROC(a) - AUROC(b); the sampled interval's ends must be its quantiles."""
    import itertools

    from ross_ood.metrics import paired_auroc_difference
    ia, oa = np.array([0.9, 0.5, 0.3]), np.array([0.4, 0.6, 0.1])
    ib, ob = np.array([0.8, 0.2, 0.35]), np.array([0.45, 0.1, 0.3])

    def auc(i, o):
        return np.mean([(x > y) + 0.5 * (x == y) for x in i for y in o])
    exact = []
    for r_id in itertools.product(range(3), repeat=3):
        for r_o in itertools.product(range(3), repeat=3):
            r_id, r_o = list(r_id), list(r_o)
            exact.append(auc(ia[r_id], oa[r_o]) - auc(ib[r_id], ob[r_o]))
    got = paired_auroc_difference((ia, {"o": oa}), (ib, {"o": ob}), n_resamples=20000, seed=3)
    assert got["o"]["diff"] == pytest.approx(auc(ia, oa) - auc(ib, ob))
    lo, hi = np.percentile(exact, [2.5, 97.5])
    # the exact distribution is discrete (steps of 1/9): the sampled ends land on its quantiles
    assert got["o"]["lo"] == pytest.approx(lo, abs=1 / 9 + 1e-9) and got["o"]["hi"] == pytest.approx(hi, abs=1 / 9 + 1e-9)
    assert got["mean"]["diff"] == got["o"]["diff"]


def test_paired_interval_is_exact_when_the_difference_cannot_vary():
    """a separates perfectly and b is a reversed: every resample gives AUROC 1 - 0 = 1."""
    from ross_ood.metrics import paired_auroc_difference
    i, o = np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0])
    d = paired_auroc_difference((i, {"x": o}), (-i, {"x": -o}), n_resamples=200)
    assert (d["x"]["diff"], d["x"]["lo"], d["x"]["hi"]) == (1.0, 1.0, 1.0)


def test_paired_interval_narrower_than_unpaired_on_correlated_scores():
    from ross_ood.metrics import bootstrap_intervals, paired_auroc_difference
    rng = np.random.default_rng(0)
    ia, oa = rng.normal(1, 1, 150), rng.normal(0, 1, 150)
    ib, ob = ia + rng.normal(0, 0.2, 150), oa + rng.normal(0, 0.2, 150)  # the same images, a little noise
    d = paired_auroc_difference((ia, {"o": oa}), (ib, {"o": ob}))["o"]
    wa = np.subtract(*bootstrap_intervals(ia, {"o": oa}, {})["o"][1::-1])
    wb = np.subtract(*bootstrap_intervals(ib, {"o": ob}, {})["o"][1::-1])
    assert d["lo"] <= d["diff"] <= d["hi"]
    assert d["hi"] - d["lo"] < 0.5 * min(wa, wb), (d, wa, wb)


def test_paired_difference_refuses_other_images():
    from ross_ood.metrics import paired_auroc_difference
    with pytest.raises(ValueError, match="same images"):
        paired_auroc_difference((np.ones(3), {"o": np.zeros(2)}), (np.ones(4), {"o": np.zeros(2)}))
    with pytest.raises(ValueError, match="set o has 2 scores in a and 3 in b"):
        paired_auroc_difference((np.ones(3), {"o": np.zeros(2)}), (np.ones(3), {"o": np.zeros(3)}))


def test_paired_difference_group_means_are_the_means_of_their_sets():
    """A group's difference is the mean of its sets' differences, and its interval is that of the
    mean of their resampled differences (so it sits between the group's own extremes' intervals)."""
    import numpy as np

    from ross_ood.metrics import paired_auroc_difference
    rng = np.random.default_rng(0)
    a = (rng.normal(1, 1, 50), {s: rng.normal(0, 1, 40) for s in "pqr"})
    b = (a[0] + rng.normal(0, 0.5, 50), {s: v + rng.normal(0, 0.5, 40) for s, v in a[1].items()})
    d = paired_auroc_difference(a, b, 300, seed=1, groups={"near": ["p", "q"], "far": ["r"]})
    assert d["near"]["diff"] == pytest.approx((d["p"]["diff"] + d["q"]["diff"]) / 2, abs=1e-12)
    assert d["far"]["diff"] == pytest.approx(d["r"]["diff"], abs=1e-12)
    assert (d["far"]["lo"], d["far"]["hi"]) == pytest.approx((d["r"]["lo"], d["r"]["hi"]), abs=1e-12)
    assert d["near"]["n_ood"] == 80 and d["mean"]["n_ood"] == 120
    assert d["mean"] == paired_auroc_difference(a, b, 300, seed=1)["mean"]  # groups do not move the mean


@pytest.mark.parametrize("n_id, n_ood, ties", [(500, 900, False), (60, 40, True), (3, 2, True), (1, 1, False)])
def test_resampled_auroc_from_counts_equals_the_rank_formula_bit_for_bit(n_id, n_ood, ties):
    """The paired bootstrap computes each resample's AUROC from draw counts over the once-sorted ID
    scores; it must equal ``auroc_by_ranks`` on the resampled arrays exactly (ties count one half)."""
    from ross_ood.metrics import _counts, _ResampledAuroc, auroc_by_ranks
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=n_id), rng.normal(size=n_ood) + 0.3
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
        b[: min(2, n_ood)] = a[0]
    ii, jj = rng.integers(0, n_id, (50, n_id)), rng.integers(0, n_ood, (50, n_ood))
    got = _ResampledAuroc(a, b)(_counts(ii, n_id), _counts(jj, n_ood))
    np.testing.assert_array_equal(got, auroc_by_ranks(a[ii], b[jj]))
    assert _counts(np.array([[2, 2, 0]]), 3).tolist() == [[1, 0, 2]]
