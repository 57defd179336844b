"""The gradient-free leg (Square on the detector's own score) and the masked-gradient verdict (issue 45)."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ross_ood
from ross_ood import cli
from ross_ood.attacks import AttackConfig, p_selection, run_attack

from .conftest import DATA_ROOT, need_data

#: scores with Energy's values and masked gradients, as a plugin file (the command line loads it too)
MASKED_PLUGIN = Path(__file__).resolve().parents[1] / "benchmarks" / "masked_plugin.py"


@pytest.fixture(scope="module")
def masked_plugin():
    from ross_ood.cli.plugins import load_plugin
    load_plugin(str(MASKED_PLUGIN))
    return MASKED_PLUGIN


def test_p_selection_follows_the_reference_schedule():
    """Hand-computed from the reference code's schedule (halvings after 10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000 of 10,000 queries), rescaled to 500 queries (x 20)."""
    want = {0: 0.8, 1: 0.4, 2: 0.4, 3: 0.2, 10: 0.2, 11: 0.1, 26: 0.05, 51: 0.025, 101: 0.0125, 201: 0.8 / 128,
            301: 0.8 / 256, 401: 0.8 / 512, 499: 0.8 / 512}
    for it, p in want.items():
        assert p_selection(0.8, it, 500) == pytest.approx(p), it
    assert p_selection(0.8, 10, 10000) == 0.8 and p_selection(0.8, 11, 10000) == 0.4


def _linear_model():
    """A network whose output ignores the input's layout: logits (mean pixel, 0)."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[0] = 1.0 / (3 * 8 * 8)
        net[1].bias.zero_()
    return ross_ood.wrap(net, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_square_climbs_a_linear_score_within_the_budget():
    """On score = mean pixel (raise it) the best point of the ball is every pixel at min(x + eps, 1)
    and the worst at max(x - eps, 0); the stripes start sits half-way (half the columns up). With
    1,000 queries Square gets within 5% of the best (measured: 0.97-1.00 of the way), within the
    eps ball and [0, 1], and its reported value is the score of the image it returns."""
    model = _linear_model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 8, 8, generator=g) * 0.9
    eps = 8 / 255
    score = lambda xv, draw: model(xv)[:, 0]  # noqa: E731
    best = (x + eps).clamp(max=1).flatten(1).mean(1).double()
    worst = (x - eps).clamp(min=0).flatten(1).mean(1).double()
    share = {}
    for q in (100, 1000):
        x_adv, s = run_attack(score, x, model, AttackConfig(eps=eps, objective="max", algorithm="square", steps=q))
        assert float((x_adv - x).abs().max()) <= eps + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
        np.testing.assert_allclose(s.numpy(), model(x_adv)[:, 0].detach().double().numpy(), atol=1e-6)
        share[q] = (s - worst) / (best - worst)
    assert (share[1000] >= 0.95).all() and (share[1000] <= 1 + 1e-5).all(), share[1000]
    assert (share[100] > 0.55).all() and share[100].mean() < share[1000].mean() - 0.1, share[100]


def test_square_result_of_an_input_does_not_depend_on_its_batch(cnn, images):
    score = lambda xv, draw: ross_ood.get_score("energy")(cnn, xv)  # noqa: E731
    cfg = AttackConfig(eps=4 / 255, objective="min", algorithm="square", steps=40, seed=3)
    together, _ = run_attack(score, images[:5], cnn, cfg)
    alone = torch.cat([run_attack(score, images[i:i + 1], cnn, cfg)[0] for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-6)
    other_seed, _ = run_attack(score, images[:5], cnn, AttackConfig(eps=4 / 255, objective="min", algorithm="square",
                                                                    steps=40, seed=4))
    assert not torch.equal(together, other_seed)


def test_square_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="p_init"):
        AttackConfig(eps=0.03, objective="min", algorithm="square", p_init=1.5)
    with pytest.raises(ValueError, match="square_queries"):
        ross_ood.AttackBudget(square_queries=-1)
    from ross_ood.engine.adversarial import check_targets
    with pytest.raises(ValueError, match="target 'square' needs square_queries > 0"):
        check_targets(["square"], ross_ood.AttackBudget(square_queries=0))
    # the gradient attacks' cache keys do not carry Square's setting
    assert "p_init" not in AttackConfig(eps=0.03, objective="min", algorithm="apgd").spec()
    assert AttackConfig(eps=0.03, objective="min", algorithm="square").spec()["p_init"] == 0.8


@pytest.fixture(scope="module")
def masked_run(masked_plugin):
    """Masked Energy and plain Energy on the zoo ResNet-20, 20 ID + 2 x 20 near-OOD test images,
    PGD-Min / -Max at 8/255 with every leg (per-plan scores kept)."""
    need_data("cifar10-png", "test.zip")
    from ross_ood.data import build_benchmark
    from ross_ood.engine.adversarial import attack_benchmark
    from ross_ood.engine.evaluate import evaluate_benchmark
    from ross_ood.models import load_model
    from ross_ood.store import BlockCache
    model = load_model("resnet20", DATA_ROOT)
    bench = build_benchmark("cifar10", DATA_ROOT, 3, 32, limit=20, seed=0, ood_sets=["near"])
    dets = {"masked_energy": ross_ood.BaseScoreDetector(model, base="masked_energy"),
            "energy": ross_ood.BaseScoreDetector(model, base="energy")}
    clean = evaluate_benchmark(model, bench, dets, BlockCache(None), n_resamples=0)
    budget = ross_ood.AttackBudget(transfer_steps=10, adaptive_steps=10, adaptive_restarts=1, eotpgd_steps=10,
                                   square_queries=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = attack_benchmark(model, bench, dets, clean.scores, eps_list=[8 / 255], objectives=["both"],
                               budget=budget, n_resamples=200)
    return bench, clean, res


@pytest.mark.slow
def test_gradient_free_leg_sees_through_masked_gradients(masked_run):
    """The gradient legs leave masked Energy near its clean AUROC; the gradient-free leg takes it
    far below (the issue's target: >= 30 points below at 8/255); plain Energy is broken by the
    gradient legs already, and its worst case is the lowest leg's, per input."""
    bench, clean, res = masked_run
    means = {(m["detector"], m["target"]): m["auroc"] for m in res.means}
    clean_auroc = {m["detector"]: m["auroc"] for m in clean.means if m["ood_set"] == "all-mean"}
    grad = min(means[("masked_energy", "transfer")], means[("masked_energy", "adaptive")])
    assert grad >= clean_auroc["masked_energy"] - 0.08, (grad, clean_auroc)
    assert means[("masked_energy", "square")] <= grad - 0.30, means
    assert means[("masked_energy", "worst")] <= means[("masked_energy", "square")] + 1e-12
    assert means[("energy", "adaptive")] <= 0.05 and means[("energy", "worst")] <= 0.05
    for (det, eps, side, s, tgt), v in res.scores.items():
        if tgt == "worst":
            legs = np.stack([res.scores[(det, eps, side, s, t)] for t in ("transfer", "adaptive", "square")])
            np.testing.assert_array_equal(v, legs.min(0) if side == "min" else legs.max(0))


def test_diagnosis_names_the_masked_detector_and_clears_the_plain_one(masked_run):
    from ross_ood.engine.diagnose import _gradient_free_rows, gradient_free_verdict
    bench, clean, res = masked_run
    scores = {n: {s: np.asarray(v["score"], np.float64) for s, v in per.items()} for n, per in clean.scores.items()}
    rows = {n: {r["objective"]: r for r in _gradient_free_rows(res.plan_scores, scores, n, [8 / 255], list(bench.ood),
                                                                200, 0)} for n in ("masked_energy", "energy")}
    m = rows["masked_energy"]["both"]
    assert m["auroc_square"] == pytest.approx(m["auroc_worst"], abs=0.02) and m["diff_square"][2] < -0.2
    assert gradient_free_verdict(m).startswith("**MASKED**")
    e = rows["energy"]["both"]
    assert e["diff_square"][0] >= 0 and gradient_free_verdict(e).startswith("not masked")
    assert m["n_id"] == 20 and m["n_ood"] == 40


def test_no_gradient_score_warns_and_only_the_gradient_free_leg_moves_it(masked_plugin):
    """A plugin score computed under ``torch.no_grad``: the gradient legs warn and leave the score
    where their start put it (no crash), the gradient-free leg lowers it."""
    model = _small_model()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 32, 32, generator=g)
    det = ross_ood.BaseScoreDetector(model, base="nograd_energy").fit(torch.rand(8, 3, 32, 32, generator=g))
    with pytest.warns(RuntimeWarning, match="no gradient"):
        adv = ross_ood.Attack(det, eps=8 / 255, objective="min", target="adaptive", budget="quick")(x)
    sq = ross_ood.Attack(det, eps=8 / 255, objective="min", target="square", budget="quick")(x)
    clean, s_adv, s_sq = (det.score(v).double() for v in (x, adv, sq))
    assert float((sq - x).abs().max()) <= 8 / 255 + 1e-6
    assert (s_sq < clean).all() and (s_sq < s_adv).all()


def _small_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(32, 10))
    return ross_ood.wrap(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_size=32)


class Killed(Exception):
    """A run stopped from outside (a kill, a lost machine)."""


def _argv(out, plugin, *extra):
    return ["attack", "--data-root", str(DATA_ROOT), "--plugin", str(plugin), "--out", str(out), "--limit", "6",
            "--model", "resnet20-noise012-e52",
            "--detectors", "median-masked_energy", "-N", "4", "--sigma", "0.12", "--noise-space", "pixel",
            "--eps", "8", "--target", "square,worst", "--transfer-steps", "3", "--adaptive-steps", "3", "--restarts",
            "1", "--eotpgd-steps", "0", "--square-queries", "30", "--ood-sets", "near", "--no-progress", "--device",
            "cpu", "--bootstrap", "50", "--block-size", "3", "--no-early-stop", *extra]


@pytest.mark.slow
def test_square_leg_from_the_command_line_equals_the_api_and_resumes(masked_plugin, tmp_path, monkeypatch):
    """``ross attack --target square,worst`` on a smoothed plugin detector: the same per-input
    scores as ``robustness_report``; a run killed inside the gradient-free leg resumes from its
    cache (the finished blocks are not attacked again) to the very numbers of an unbroken run."""
    need_data("cifar10-png", "test.zip")
    import ross_ood.attacks.run as run_mod
    from ross_ood.data import build_benchmark
    from ross_ood.models import load_model
    from ross_ood.runs.rundir import load_input_scores
    full = tmp_path / "full"
    assert cli.main(_argv(full, masked_plugin)) == 0
    # the API: the same images, detector and budget
    model = load_model("resnet20-noise012-e52", DATA_ROOT)
    bench = build_benchmark("cifar10", DATA_ROOT, 3, 32, limit=6, seed=0, ood_sets=["near"])
    stack = lambda ds: torch.stack([ds[i][0] for i in range(len(ds))])  # noqa: E731
    det = ross_ood.MedianSmoothing(model, base="masked_energy", n_samples=4, sigma=0.12, noise_space="pixel", seed=0)
    det.fit(stack(bench.val))
    budget = ross_ood.AttackBudget(transfer_steps=3, adaptive_steps=3, adaptive_restarts=1, eotpgd_steps=0,
                                   square_queries=30, early_stop=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = ross_ood.robustness_report(det, stack(bench.id), {s: stack(ds) for s, ds in bench.ood.items()},
                                         eps=8 / 255, budget=budget, targets=["square", "worst"], n_resamples=50)
    stored = load_input_scores(full)
    keys = [k for k in rep.scores if k[1] != "clean"]
    assert len(keys) == 2 * 3 and all(k in stored for k in keys)
    for k in keys:
        np.testing.assert_allclose(rep.scores[k], stored[k], rtol=0, atol=1e-6, err_msg=str(k))
    # killed in the third block of the gradient-free leg, then resumed
    real, calls, armed = run_mod.square, [], [True]

    def dying(*a, **kw):
        calls.append(len(a[1]))
        if armed[0] and len(calls) == 3:
            armed[0] = False
            raise Killed("killed")
        return real(*a, **kw)
    monkeypatch.setattr(run_mod, "square", dying)
    part = tmp_path / "part"
    with pytest.raises(Killed):
        cli.main(_argv(part, masked_plugin))
    calls.clear()
    assert cli.main(_argv(part, masked_plugin)) == 0
    assert len(calls) == 6 - 2  # 2 ID blocks + 2 x 2 OOD blocks: the two finished ones are not run again
    again = load_input_scores(part)
    for k in keys:
        np.testing.assert_array_equal(again[k], stored[k])
    doc = json.loads((full / "results.json").read_text())
    assert doc["attack_settings"]["square_queries"] == 30
    assert {r["attack"] for r in doc["means"] if r["target"] == "square"} == {"square"}


@pytest.mark.slow
def test_legs_run_apart_merge_to_the_run_with_every_leg(tmp_path):
    """A stored run without the gradient-free leg and a later ``--target square`` run on the same
    images merge (``ross combine --legs``) into the very per-input scores of one run with every leg;
    runs on other images are refused by name."""
    need_data("cifar10", "test.zip")
    from ross_ood.runs.rundir import load_input_scores
    base = ["attack", "--data-root", str(DATA_ROOT), "--limit", "6", "--detectors", "msp,energy", "--eps", "8",
            "--transfer-steps", "3", "--adaptive-steps", "3", "--restarts", "1", "--eotpgd-steps", "3",
            "--no-early-stop", "--no-progress", "--device", "cpu", "--bootstrap", "50",
            "--ood", "tin=" + str(DATA_ROOT / "tinyimagenet32" / "val.zip"), "--only-extra"]
    old, sq, whole = tmp_path / "old", tmp_path / "sq", tmp_path / "whole"
    assert cli.main([*base, "--square-queries", "0", "--target", "transfer,adaptive,worst", "--out", str(old)]) == 0
    assert cli.main([*base, "--square-queries", "40", "--target", "square", "--out", str(sq)]) == 0
    assert cli.main([*base, "--square-queries", "40", "--target", "transfer,adaptive,square,worst",
                     "--out", str(whole)]) == 0
    assert cli.main(["combine", "--legs", str(tmp_path / "merged"), str(old), str(sq)]) == 0
    got, want = load_input_scores(tmp_path / "merged"), load_input_scores(whole)
    assert set(got) == set(want) and any(k[4] == "square" for k in got)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6, err_msg=str(k))
    doc = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert doc["attack_settings"]["square_queries"] == 40 and doc["targets"] == ["transfer", "adaptive", "square",
                                                                                 "worst"]
    # ross diagnose on the one merged run: the masked-gradient check (msp and energy are not masked)
    assert cli.main(["diagnose", str(tmp_path / "merged"), "--detector", "energy", "--out", str(tmp_path / "dg")]) == 0
    check = json.loads((tmp_path / "dg" / "diagnosis.json").read_text())["gradient_free"]
    assert [r["objective"] for r in check] == ["min", "max", "both"] and all(r["diff_square"][2] >= 0 for r in check)
    with pytest.raises(ValueError, match="holds no square target"):
        from ross_ood.engine.diagnose import masked_gradient_check
        masked_gradient_check(old, "energy")
    other = tmp_path / "other"
    assert cli.main([*base, "--limit", "5", "--target", "square", "--square-queries", "10", "--out", str(other)]) == 0
    with pytest.raises(ValueError, match="differ in set_fingerprints"):
        from ross_ood.runs.combine import merge_legs
        merge_legs([old, other], tmp_path / "bad")


def test_square_moves_images_of_one_pixel(tiny):
    """1 x 2 images (the tiny linear model): the window is one pixel, never empty. Raising z_0 = x_0
    (the first logit) within eps = 0.1 of x = (0.5, 0.5) ends at x_0 = 0.6 exactly."""
    x = torch.full((3, 1, 1, 2), 0.5)
    score = lambda xv, draw: tiny(xv)[:, 0]  # noqa: E731
    x_adv, s = run_attack(score, x, tiny, AttackConfig(eps=0.1, objective="max", algorithm="square", steps=50))
    np.testing.assert_allclose(x_adv[:, 0, 0, 0].numpy(), 0.6, atol=1e-6)
    np.testing.assert_allclose(s.numpy(), 0.6, atol=1e-6)
