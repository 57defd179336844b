"""Attack strength regression (issue 17): on a small real model and real images, the default
attack's worst case is at or below an independent plain EOT-PGD (``reference_attack.py``) and at
or below the paper's transfer attack, for a plain and a smoothed detector, under PGD-Min,
PGD-Max and PGD-Both. A change that weakens the default attack fails here."""
import numpy as np
import pytest
import torch

from ross_ood.attacks import eps_tensor
from ross_ood.engine.adversarial import AttackBudget, attack_benchmark
from ross_ood.metrics import auroc_by_ranks
from ross_ood.noise import channel_scale

from .conftest import DATA_ROOT, need_data
from .reference_attack import reference_eotpgd

pytestmark = pytest.mark.slow
EPS = 0.2  # pixel units: moves median-MSP by about 20 AUROC points on MNIST (at 0.1 only by about 5)
#: the reference's own randomness: over seeds 1-3 it reaches 79.51 / 77.78 / 78.99 PGD-Min AUROC on
#: median-MSP here (24 + 24 images; one AUROC point is about 6 of the 576 ID-OOD pairs), so "at or
#: below" is checked to within 1 point, less than that spread (the default reached 76.91 when written)
TOL = 0.01


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    need_data("mnist", "t10k-images-idx3-ubyte.gz")
    need_data("fashion-mnist", "t10k-images-idx3-ubyte.gz")
    from ross_ood.cli.jobs.common import clean_run
    from ross_ood.cli.settings import AttackSettings
    st = AttackSettings(benchmark="mnist", data_root=str(DATA_ROOT), out=str(tmp_path_factory.mktemp("s")), limit=24,
                        detectors="msp,median-msp", sigma=0.25, noise_space="pixel", n_samples=25,
                        ood=["fmnist=" + str(DATA_ROOT / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")],
                        only_extra=True, progress=False, device="cpu", bootstrap=0)
    return clean_run(st)


def _auroc(id_s, ood):
    return float(np.mean([auroc_by_ranks(np.asarray(id_s), np.asarray(v)) for v in ood.values()]))


@pytest.mark.parametrize("det_name", ["msp", "median-msp"])
def test_default_attack_beats_plain_eotpgd_and_transfer(mnist_run, det_name):
    run = mnist_run
    _check_strength(run, det_name, run.dets[det_name], run.result.scores[det_name])


@pytest.fixture(scope="module")
def mnist_stats(mnist_run):
    """Feature statistics of the MNIST model from the 1,000-image ID validation split of the whole
    benchmark (MNIST ships no training set here; none of these images is attacked below)."""
    import ross_ood
    from ross_ood.data import build_benchmark
    bench = build_benchmark("mnist", DATA_ROOT, 1, 28)
    val = bench.val
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([int(val[i][1]) for i in range(len(val))])
    return ross_ood.fit_feature_stats(mnist_run.model, x, y)


@pytest.mark.parametrize("name", ["knn", "mahalanobis", "vim", "react", "ash", "scale"])
def test_default_attack_beats_plain_eotpgd_on_the_feature_scores(mnist_run, mnist_stats, name):
    """The six feature-space scores (issue 26) through the same check: each is differentiable end to
    end, so the default attack must reach at least what the plain reference reaches."""
    import ross_ood
    from ross_ood.scores import STATS_SCORES
    run = mnist_run
    score = ross_ood.get_score(name, **({"stats": mnist_stats, "k": 10} if name == "knn" else
                                         {"stats": mnist_stats} if name in STATS_SCORES else {}),
                               **({"model": run.model} if name == "vim" else {}))
    det = ross_ood.BaseScoreDetector(run.model, base=score)
    sets = {"id_val": run.bench.val, "id_test": run.bench.id, **run.bench.ood}
    clean = {}
    for s, ds in sets.items():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        with torch.no_grad():
            clean[s] = {"score": det.score(x).double().numpy()}
    _check_strength(run, name, det, clean)


def _check_strength(run, det_name, det, clean):
    sets = list(run.bench.ood)
    got = attack_benchmark(run.model, run.bench, {det_name: det}, {det_name: clean}, eps_list=[EPS],
                           objectives=["min", "max"], targets=["transfer", "worst"], budget=AttackBudget(),
                           block_size=512, n_resamples=0).scores
    eps_px = eps_tensor(run.model, EPS, "pixel")
    sigma = channel_scale(run.model.std, getattr(det, "sigma", 0.0), "pixel")
    smoothed = hasattr(det, "sigma")
    ref = {}
    for side, s, ds in [("min", "id_test", run.bench.id)] + [("max", s, run.bench.ood[s]) for s in sets]:
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        adv = reference_eotpgd(lambda v: det.base(run.model, v), x, sigma, eps_px, side, True,
                               copies=16 if smoothed else 1, judge_copies=16 if smoothed else 1, seed=1)
        with torch.no_grad():
            ref[s] = det.score(adv).double().numpy()
    c = {s: np.asarray(v["score"], np.float64) for s, v in clean.items()}

    def objective(src, o):
        id_s = src("min", "id_test") if o in ("min", "both") else c["id_test"]
        return _auroc(id_s, {s: src("max", s) if o in ("max", "both") else c[s] for s in sets})
    for o in ("min", "max", "both"):
        worst = objective(lambda side, s: got[(det_name, EPS, side, s, "worst")], o)
        transfer = objective(lambda side, s: got[(det_name, EPS, side, s, "transfer")], o)
        reference = objective(lambda side, s: ref[s], o)
        clean_auroc = _auroc(c["id_test"], {s: c[s] for s in sets})
        assert worst <= reference + TOL, (o, worst, reference)
        assert worst <= transfer + 1e-12, (o, worst, transfer)
        assert reference < clean_auroc - 0.05, (o, reference, clean_auroc)  # the reference itself is no dud
