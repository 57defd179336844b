"""The one-call robustness report, the attack object and score plugins (issue 43)."""
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import ross_ood
from ross_ood import cli

from .conftest import DATA_ROOT, need_data

TINY = dict(transfer_steps=3, adaptive_steps=3, adaptive_restarts=1, eotpgd_steps=2, attack_n=2, eotpgd_n=2,
            square_queries=10)


def _net_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    model = ross_ood.wrap(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=32)
    g = torch.Generator().manual_seed(0)
    return model, [torch.rand(12, 3, 32, 32, generator=g) for _ in range(3)]


@pytest.mark.slow
def test_report_equals_the_stored_attack_run_per_input(tmp_path):
    """A zoo model through the new call gives the very per-input scores of ``ross attack`` on the
    same images and settings (clean and attacked, every target), to 1e-6."""
    need_data("cifar10-png", "test.zip")
    from ross_ood.data import build_benchmark
    from ross_ood.models import load_model
    from ross_ood.runs.rundir import load_input_scores
    out = tmp_path / "cli"
    flags = ["--data-root", str(DATA_ROOT), "--model", "resnet20-noise012-e52", "--detectors", "median-energy",
             "--sigma", "0.12", "--noise-space", "pixel", "-N", "4", "--limit", "6", "--ood-sets", "near",
             "--eps", "8", "--transfer-steps", "3", "--adaptive-steps", "3", "--restarts", "1", "--eotpgd-steps", "2",
             "--attack-n", "2", "--eotpgd-n", "2", "--square-queries", "10", "--bootstrap", "50", "--no-progress", "--device", "cpu",
             "--out", str(out)]
    assert cli.main(["attack", *flags]) == 0
    model = load_model("resnet20-noise012-e52", DATA_ROOT)
    bench = build_benchmark("cifar10", DATA_ROOT, 3, 32, limit=6, seed=0, ood_sets=["near"])
    stack = lambda ds: torch.stack([ds[i][0] for i in range(len(ds))])  # noqa: E731
    det = ross_ood.MedianSmoothing(model, base="energy", n_samples=4, sigma=0.12, noise_space="pixel", seed=0)
    det.fit(stack(bench.val))
    rep = ross_ood.robustness_report(det, stack(bench.id), {s: stack(ds) for s, ds in bench.ood.items()},
                                     eps=8 / 255, budget=ross_ood.AttackBudget(**TINY), n_resamples=50)
    stored = load_input_scores(out)
    shared = [k for k in rep.scores if k in stored]
    assert len(shared) == len(rep.scores) == 3 + 4 * 3  # clean x 3 sets; 4 targets x (min: ID, max: 2 sets)
    for k in shared:
        np.testing.assert_allclose(rep.scores[k], stored[k], rtol=0, atol=1e-6, err_msg=str(k))
    # a saved report is a run folder: ross compare pairs two of them on the same images, as two CLI runs
    rep.save(tmp_path / "api")
    plain = ross_ood.BaseScoreDetector(model, base="energy").fit(stack(bench.val))
    ross_ood.robustness_report(plain, stack(bench.id), {s: stack(ds) for s, ds in bench.ood.items()}, eps=8 / 255,
                               budget=ross_ood.AttackBudget(**TINY), n_resamples=50).save(tmp_path / "api-plain")
    assert cli.main(["compare", str(tmp_path / "api"), str(tmp_path / "api-plain"), "--a", "median-energy",
                     "--b", "energy"]) == 0


def test_attack_object_stays_in_budget_and_equals_the_reports_worst_case():
    model, (val, x_id, x_ood) = _net_and_data()
    det = ross_ood.MedianSmoothing(model, base="energy", n_samples=4, sigma=0.12, seed=0).fit(val)
    budget = ross_ood.AttackBudget(early_stop=False, **TINY)
    eps = 8 / 255
    rep = ross_ood.robustness_report(det, x_id, {"ood": x_ood}, eps=eps, budget=budget, n_resamples=0)
    adv = ross_ood.Attack(det, eps=eps, objective="min", budget=budget)(x_id)
    assert adv.shape == x_id.shape and float((adv - x_id).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        got = det.score(adv).double().numpy()
    np.testing.assert_allclose(got, rep.scores[("median-energy", eps, "min", "id_test", "worst")], atol=1e-5)
    assert (got <= rep.scores[("median-energy", "clean", "clean", "id_test", "clean")] + 1e-6).all()
    up = ross_ood.Attack(det, eps=eps, objective="max", target="transfer", budget=budget)(x_ood)
    np.testing.assert_allclose(det.score(up).detach().double().numpy(),
                               rep.scores[("median-energy", eps, "max", "ood", "transfer")], atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=8), "beyond the pixel range"), (dict(eps=-0.1), "eps"), (dict(eps=0.03, objective="both"), "objective"),
    (dict(eps=0.03, target="best"), "target"), (dict(eps=0.03, budget="huge"), "budget")])
def test_attack_object_refuses_bad_settings(kwargs, match):
    model, (val, _, _) = _net_and_data()
    det = ross_ood.BaseScoreDetector(model, base="msp").fit(val)
    with pytest.raises(ValueError, match=match):
        ross_ood.Attack(det, **kwargs)


def test_report_refuses_images_the_model_does_not_take():
    model, (val, x_id, x_ood) = _net_and_data()
    det = ross_ood.BaseScoreDetector(model, base="energy").fit(val)
    with pytest.raises(ValueError, match=r"images are 3 x 28 x 28, the model takes 3 x 32 x 32"):
        ross_ood.robustness_report(det, x_id, {"small": torch.rand(4, 3, 28, 28)}, eps=2 / 255)
    with pytest.raises(ValueError, match=r"pixels must be finite and in \[0, 1\]"):
        ross_ood.robustness_report(det, x_id * 255, {"ood": x_ood}, eps=2 / 255)
    with pytest.raises(ValueError, match="beyond the pixel range"):
        ross_ood.robustness_report(det, x_id, {"ood": x_ood}, eps=8)
    with pytest.raises(ValueError, match="has images of 28 x 28 pixels but the model takes 32 x 32"):
        det.score(torch.rand(2, 3, 28, 28))  # the detector's own scoring refuses it too
    with pytest.raises(ValueError, match="beyond the pixel range"):
        ross_ood.attacks.AttackConfig(eps=8, objective="min")


PLUGIN = textwrap.dedent('''
    import ross_ood
    from ross_ood.scores import Score

    class Top2Margin(Score):
        """Top-2 logit margin z_(1) - z_(2): higher = more confident = more ID."""
        name, pass_level = "top2", True

        def from_outputs(self, out, model):
            top = out.logits.topk(2, dim=1).values
            return top[:, 0] - top[:, 1]

    ross_ood.register_score("top2", Top2Margin)
''')


@pytest.mark.slow
def test_plugin_score_runs_in_eval_and_attack_under_median_quantile_and_ross(tmp_path, capsys):
    need_data("cifar10-png", "test.zip")
    plugin = tmp_path / "top2_plugin.py"
    plugin.write_text(PLUGIN)
    common = ["--data-root", str(DATA_ROOT), "--plugin", str(plugin), "--limit", "6", "--ood-sets", "near",
              "-N", "4", "--no-progress", "--device", "cpu", "--bootstrap", "20"]
    dets = "top2,median-top2,quantile-top2,ross-top2"
    assert cli.main(["eval", *common, "--detectors", dets, "--out", str(tmp_path / "e")]) == 0
    assert cli.main(["attack", *common, "--detectors", "median-top2,ross-top2,quantile-top2", "--eps", "2",
                     "--transfer-steps", "2", "--adaptive-steps", "2", "--restarts", "1", "--eotpgd-steps", "0",
                     "--square-queries", "10", "--target", "transfer,adaptive,worst", "--out", str(tmp_path / "a")]) == 0
    import json
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {r["detector"] for r in doc["means"]} == {"median-top2", "ross-top2", "quantile-top2"}
    # certify and sweep take it too: certified AUROC does not grow with the radius; the sweep's N = 4
    # clean row is the eval run's ross-top2 (the same noise draws)
    assert cli.main(["certify", *common, "--detectors", "median-top2", "--sigma", "0.12", "--noise-space", "pixel",
                     "-N", "64", "--radii", "0,0.1,0.25", "--out", str(tmp_path / "c")]) == 0
    cert = {r["radius"]: r["auroc"] for r in json.loads((tmp_path / "c" / "results.json").read_text())["means"]
            if r["detector"] == "median-top2" and r["radius"] != "clean"}
    assert sorted(cert) == [0, 0.1, 0.25] and cert[0] >= cert[0.1] >= cert[0.25]
    assert cli.main(["sweep", *common, "--detectors", "ross-top2", "--sweep", "n_samples", "--n-samples-values", "2,4",
                     "--attack-eps", "", "--out", str(tmp_path / "s")]) == 0
    sweep = json.loads((tmp_path / "s" / "results.json").read_text())
    ev = json.loads((tmp_path / "e" / "results.json").read_text())
    n4 = {r["ood_set"]: r["auroc"] for r in sweep["results"] if r["n_samples"] == 4 and r["condition"] == "clean"}
    want = {r["ood_set"]: r["auroc"] for r in ev["results"] if r["detector"] == "ross-top2"}
    assert n4 and n4 == pytest.approx(want, abs=1e-12)
    # without the plugin the name is unknown, refused before any work
    assert cli.main(["eval", "--data-root", str(DATA_ROOT), "--detectors", "median-top3", "--out",
                     str(tmp_path / "x")]) == 2
    assert "unknown detector 'median-top3'" in capsys.readouterr().err
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert cli.main(["eval", "--plugin", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert "plugin" in capsys.readouterr().err


def test_register_score_refuses_what_it_cannot_serve():
    from ross_ood.scores import Score, register_score

    class Msp2(Score):
        name = "msp"
    with pytest.raises(ValueError, match="built in"):
        register_score("msp", Msp2)
    with pytest.raises(TypeError, match="subclass of ross_ood.scores.Score"):
        register_score("foo", dict)
    with pytest.raises(ValueError, match="lowercase"):
        register_score("Foo Bar", Msp2)

    class Named(Score):
        name = "other"
    with pytest.raises(ValueError, match="has name 'other'"):
        register_score("named", Named)


@pytest.mark.slow
def test_the_example_runs_and_reports(tmp_path, monkeypatch, capsys):
    """examples/your_model.py at a smaller size: a table with the attacked and certified rows."""
    need_data("cifar10", "train.zip")
    need_data("cifar100", "test.zip")
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "your_model.py"
    spec = importlib.util.spec_from_file_location("your_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("ROSS_DATA", str(DATA_ROOT))
    rep = mod.main(["--images", "16", "--train-images", "500", "--epochs", "1"])
    out = capsys.readouterr().out
    assert "### target: worst case per input" in out and "| median-energy | 0.12 |" in out
    for eps in (2 / 255, 8 / 255):
        assert rep.auroc(eps, "both", "worst") <= rep.auroc(eps, "min", "worst") + 1e-12
    assert 0.0 <= rep.certified[0]["auroc"] <= 1.0


def test_defects_of_the_new_user_trial(tmp_path, capsys):
    """Each defect found when a new user tried their own network is refused by name."""
    one = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    m = ross_ood.wrap(one, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError, match="1 output column"):
        ross_ood.base_score("msp", m, torch.rand(2, 3, 32, 32))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        ross_ood.wrap(lambda x: x, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError, match="first convolution takes 3 input channels"):
        ross_ood.wrap(one, mean=(0.5,), std=(0.25,))
    assert "threshold_" in ross_ood.Detector.predict.__doc__
    need_data("mnist", "t10k-images-idx3-ubyte.gz")
    assert cli.main(["eval", "--data-root", str(DATA_ROOT), "--model", "mnist-cnn", "--benchmark", "cifar10",
                     "--limit", "5", "--out", str(tmp_path / "m")]) == 2
    assert "the model takes 1-channel images of 28 px but benchmark 'cifar10' has 3-channel" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert cli.main(["compare", str(tmp_path / "nonexistent")]) == 2
    assert "holds no results.json" in capsys.readouterr().err
    assert cli.main(["attack", "--eps", "300", "--out", str(tmp_path / "a")]) == 2
    assert "beyond the pixel range" in capsys.readouterr().err


MODEL_PLUGIN = textwrap.dedent('''
    import torch
    from torch import nn

    class MyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.body(x))

    def make():
        torch.manual_seed(0)
        return MyCNN(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32
''')


def test_plugin_model_from_a_file_runs_through_ross_eval(tmp_path, capsys):
    """``--model FILE.py:FACTORY`` with ``--checkpoint`` loaded safely into it; a checkpoint of
    another network is refused by name."""
    need_data("cifar10-png", "test.zip")
    import json
    f = tmp_path / "mymodel.py"
    f.write_text(MODEL_PLUGIN)
    from ross_ood.cli.plugins import load_plugin
    net = load_plugin(str(f)).make()[0]
    with torch.no_grad():
        net.head.bias.fill_(3.0)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    common = ["--data-root", str(DATA_ROOT), "--model", f"{f}:make", "--detectors", "msp,median-energy", "-N", "2",
              "--limit", "6", "--ood-sets", "near", "--no-progress", "--device", "cpu", "--bootstrap", "10"]
    assert cli.main(["eval", *common, "--checkpoint", str(tmp_path / "w.pt"), "--out", str(tmp_path / "e")]) == 0
    doc = json.loads((tmp_path / "e" / "results.json").read_text())
    assert {r["detector"] for r in doc["means"]} == {"msp", "median-energy"} and doc["model"] == f"{f}:make"
    torch.save({"state_dict": {"other.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    assert cli.main(["eval", *common, "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert cli.main(["eval", *common[:3], f"{f}:nothing", *common[4:], "--out", str(tmp_path / "n")]) == 2
    assert "has no function 'nothing'" in capsys.readouterr().err
    # a zoo of one's own: a name for the same network and weights, paths relative to the file
    (tmp_path / "zoo.yaml").write_text("mine:\n  model: mymodel.py:make\n  checkpoint: w.pt\n")
    assert cli.main(["eval", *common[:3], "mine", *common[4:], "--zoo", str(tmp_path / "zoo.yaml"),
                     "--out", str(tmp_path / "z")]) == 0
    z = json.loads((tmp_path / "z" / "results.json").read_text())
    assert [r["auroc"] for r in z["means"]] == [r["auroc"] for r in doc["means"]]
    (tmp_path / "bad.yaml").write_text("mine: {model: nofactory}\n")
    assert cli.main(["eval", "--zoo", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "q")]) == 2
    assert "needs model: FILE.py:FACTORY" in capsys.readouterr().err


class Brightness:
    """A detector that is not ross_ood's: minus the distance of an image's mean brightness to the
    ID validation images' mean, in numpy (no gradient); ``surrogate`` is the same in torch when asked."""

    name = "brightness"

    def __init__(self, with_surrogate=False):
        self.mu = None
        if with_surrogate:
            self.surrogate = lambda x: -(x.mean((1, 2, 3)) - self.mu).abs()

    def fit(self, x):
        self.mu = float(x.mean())

    def score(self, x):
        return -np.abs(x.detach().cpu().numpy().mean((1, 2, 3)) - self.mu)

    def spec(self):
        return {"mu": self.mu}


def test_a_detector_object_of_ones_own_is_reported_and_attacked():
    """Any object with ``score`` (and ``fit``, ``spec``; ``surrogate`` or none): its clean AUROC is
    the one computed from its own scores, the gradient legs warn when it has no gradient and leave
    it where it is, the gradient-free leg moves it; with a surrogate the gradient legs move it too."""
    from ross_ood.detectors import as_detector
    from ross_ood.metrics import ood_metrics
    model, (val, x_id, x_ood) = _net_and_data()
    x_ood = x_ood * 0.94  # a little darker (mean brightness 0.47 against 0.50): within reach of 8/255
    obj = Brightness()
    det = as_detector(obj, model).fit(val)
    assert obj.mu is not None and det.threshold_ is not None
    want = ood_metrics(obj.score(x_id), obj.score(x_ood))["auroc"]
    with pytest.warns(RuntimeWarning, match="no gradient"):
        rep = ross_ood.robustness_report(obj, x_id, {"dark": x_ood}, eps=8 / 255, budget="quick", model=model,
                                         n_resamples=0, objectives=["both"])
    assert rep.auroc("clean") == pytest.approx(want, abs=1e-12) and want > 0.9
    grad = min(rep.auroc(8 / 255, "both", t) for t in ("transfer", "adaptive"))
    assert grad >= want - 0.15 and rep.auroc(8 / 255, "both", "square") <= grad - 0.2
    assert rep.doc["detectors"][0]["name"] == "brightness"
    smooth = Brightness(with_surrogate=True)
    smooth.fit(val)
    adv = ross_ood.Attack(smooth, eps=8 / 255, objective="min", target="adaptive", budget="quick", model=model)(x_id)
    assert (torch.as_tensor(smooth.score(adv)) < torch.as_tensor(smooth.score(x_id)) - 0.02).all()
    with pytest.raises(TypeError, match="needs the classifier it guards"):
        ross_ood.robustness_report(obj, x_id, {"dark": x_ood})
    with pytest.raises(TypeError, match="score"):
        ross_ood.Attack(object(), eps=0.03, model=model)
    with pytest.raises(TypeError, match="cannot be saved"):
        det.save("x.json")
