"""Bad input through the Python API gets one clear line (the cases of the API-input issue).

Each test names the issue's item it covers; each fails on the code before the fix (a silent
wrong answer, or a raw torch / numpy / Python error instead of a message naming the problem).
"""
import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import ross_ood
from ross_ood import cli

from .conftest import DATA_ROOT, SmallCNN, need_data, readme_images


@pytest.fixture
def fitted(cnn, images):
    sm = dict(n_samples=5, sigma=0.1, noise_space="pixel", seed=0)
    return {"median": ross_ood.MedianSmoothing(cnn, base="msp", **sm).fit(images),
            "quantile": ross_ood.QuantileSmoothing(cnn, base="msp", q=0.25, **sm).fit(images),
            "ross": ross_ood.ROSS(cnn, base="msp", lam=0.01, **sm).fit(images)}


# 1 ------------------------------------------------------------------ certificate arguments
@pytest.mark.parametrize("kind", ["median", "quantile", "ross"])
@pytest.mark.parametrize("alpha", [2, 0, 1, 1.5, float("nan"), -0.1])
def test_item1_certified_bounds_refuse_the_alphas_the_cli_refuses(fitted, cnn, images, kind, alpha):
    samples = np.random.default_rng(0).random((4, 200))
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        fitted[kind].certified_bounds(samples, radius=0.1, alpha=alpha)


@pytest.mark.parametrize("kind", ["median", "quantile", "ross"])
def test_item1_certified_bounds_refuse_bad_radius_and_grid(fitted, kind):
    samples = np.random.default_rng(0).random((4, 200))
    for radius in (float("nan"), -0.1, float("inf")):
        with pytest.raises(ValueError, match="radius must be a finite number"):
            fitted[kind].certified_bounds(samples, radius=radius)
    with pytest.raises(ValueError, match="grid must be an integer >= 1"):
        fitted[kind].certified_bounds(samples, radius=0.1, grid=0)
    lo, hi = fitted[kind].certified_bounds(samples, radius=0.1, alpha=0.01)
    assert np.all(lo <= hi)  # a valid alpha: lower bounds never above upper bounds


def test_item1_cli_and_api_share_one_alpha_validator():
    from ross_ood.cli.settings import CertifySettings
    for alpha in (2, 0, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
            CertifySettings(detectors=["median-msp"], sigma=[0.12], alpha=alpha).validate()
    with pytest.raises(ValueError, match="radius must be a finite number"):
        CertifySettings(detectors=["median-msp"], sigma=[0.12], radii=[float("nan")]).validate()


# 2 ------------------------------------------------------------------ ROSS without a spread
def test_item2_ross_refuses_one_copy_and_no_noise(cnn, images):
    with pytest.raises(ValueError, match="ROSS needs n_samples >= 2.*spread D is always 0"):
        ross_ood.ROSS(cnn, base="msp", n_samples=1)
    with pytest.raises(ValueError, match="ROSS needs sigma > 0.*spread D is always 0"):
        ross_ood.ROSS(cnn, base="msp", n_samples=5, sigma=0.0)
    det = ross_ood.ROSS(cnn, base="msp", n_samples=5).fit(images)
    with pytest.raises(ValueError, match="ROSS needs n_samples >= 2"):
        det.with_params(n_samples=1)
    ross_ood.MedianSmoothing(cnn, base="msp", n_samples=1, sigma=0.0)  # median smoothing allows both


def test_item2_cli_refuses_ross_with_one_copy_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["eval", "-N", "1", "--detectors", "ross-msp", "--limit", "8", "--out", str(out),
                     "--no-progress", "--device", "cpu", "--data-root", str(DATA_ROOT)])
    assert code == 2 and "ROSS needs n_samples >= 2" in capsys.readouterr().err
    assert not out.exists()


# 3 ------------------------------------------------------------------ features and surrogates check x
@pytest.mark.parametrize("bad,match", [
    ("nan", "NaN"), ("uint8", "floating-point"), ("x255", r"outside \[0, 1\]"), ("3d", "rank 4"), ("empty", "empty")])
def test_item3_features_and_surrogates_check_their_input(fitted, cnn, images, bad, match):
    x = {"nan": images.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))),
         "uint8": (images * 255).to(torch.uint8), "x255": images * 255, "3d": images[0],
         "empty": images[:0]}[bad]
    plain = ross_ood.BaseScoreDetector(cnn, base="msp")
    for det in (plain, fitted["median"], fitted["ross"]):
        with pytest.raises(ValueError, match=match):
            det.features(x)
        with pytest.raises(ValueError, match=match):
            det.surrogate("base")(x, 0)
    with pytest.raises(ValueError, match=match):
        fitted["ross"].surrogate("ross", attack_n=4)(x, 0)


# 4 ------------------------------------------------------------------ feature arrays are checked
def test_item4_score_features_refuses_wrong_copies_and_nan(fitted, cnn):
    det = fitted["ross"]
    with pytest.raises(ValueError, match=r"must have shape \(B, 5\): one column per noisy copy; got \(3, 7\)"):
        det.score_features(torch.rand(3, 7))
    bad = torch.rand(3, 5)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite values"):
        det.score_features(bad)
    with pytest.raises(ValueError, match=r"must have shape \(B,\)"):
        ross_ood.BaseScoreDetector(cnn, base="msp").fit_features(torch.rand(4)).score_features(torch.rand(4, 2))
    with pytest.raises(ValueError, match=r"fit features .* got \(3, 7\)"):
        det.with_params().fit_features(torch.rand(3, 7))


# 5 ------------------------------------------------------------------ the certificate path
@pytest.mark.parametrize("kind", ["median", "quantile", "ross"])
def test_item5_certified_bounds_accept_the_detectors_own_features(fitted, images, kind):
    det = fitted[kind]
    feats = det.features(images)
    assert not feats.requires_grad  # x does not require grad: neither do its features
    lo, hi = det.certified_bounds(feats, radius=0.05, alpha=0.1)
    assert lo.shape == hi.shape == (len(images),) and np.all(lo <= hi)
    x = images.clone().requires_grad_(True)
    assert det.features(x).requires_grad  # ... and with gradients asked for, they flow


@pytest.mark.slow
def test_item5_readme_code_blocks_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written (in one namespace, in order)."""
    need_data("cifar10-png", "test.zip")
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert blocks, "the README has no python code block"
    monkeypatch.setenv("ROSS_DATA", str(DATA_ROOT))
    monkeypatch.chdir(tmp_path)
    readme_images(tmp_path / "my_images")
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the README's own code, as a user runs it


# 6 ------------------------------------------------------------------ a network that returns a tuple
class _TupleNet(nn.Module):
    def __init__(self, as_dict=False):
        super().__init__()
        self.conv, self.fc, self.as_dict = nn.Conv2d(3, 4, 3), nn.Linear(4, 5), as_dict

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        z = self.fc(h)
        return {"logits": z, "h": h} if self.as_dict else (z, h)


@pytest.mark.parametrize("as_dict", [False, True])
def test_item6_network_returning_a_tuple_or_dict_is_named(images, as_dict):
    m = ross_ood.wrap(_TupleNet(as_dict), [0.5] * 3, [0.25] * 3)
    kind = "dict" if as_dict else "tuple"
    for call in (lambda: ross_ood.base_score("msp", m, images), lambda: ross_ood.base_score("fdbd", m, images),
                 lambda: ross_ood.wrap(_TupleNet(as_dict), [0.5] * 3, [0.25] * 3, linear="fc").outputs(images)):
        with pytest.raises(TypeError, match=f"forward returned a {kind}, not a logits tensor"):
            call()


# 7 ------------------------------------------------------------------ float64 / bfloat16 networks
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_item7_half_precision_network_is_refused_by_name(dtype):
    with pytest.raises(ValueError, match=f"parameters are {dtype}; ross-ood runs networks in float32"):
        ross_ood.wrap(SmallCNN().to(dtype), [0.5] * 3, [0.25] * 3)


def test_item7_float64_network_is_followed(images):
    torch.manual_seed(0)
    net = SmallCNN()
    m32 = ross_ood.wrap(net, [0.5] * 3, [0.25] * 3)
    s32 = ross_ood.base_score("energy", m32, images)
    m64 = ross_ood.wrap(SmallCNN().double().requires_grad_(False), [0.5] * 3, [0.25] * 3)
    m64.net.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    s64 = ross_ood.base_score("energy", m64, images)  # float32 images are cast to the network's float64
    assert s64.dtype == torch.float64
    torch.testing.assert_close(s64.float(), s32, rtol=1e-5, atol=1e-5)


# 8 ------------------------------------------------------------------ $ROSS_DATA for load_model
def test_item8_load_model_honours_ross_data(monkeypatch, tmp_path):
    from ross_ood.models import CheckpointError, load_model
    monkeypatch.setenv("ROSS_DATA", str(tmp_path))
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {tmp_path}/weights/resnet20-12fca82f.th"):
        load_model("resnet20-original")


# 9 (leaderboard specs): tests/test_leaderboard.py::test_malformed_specs_get_one_line
# 10 ----------------------------------------------------------------- ross compare
def _eval_run(tmp_path, name, dets, limit=8):
    out = tmp_path / name
    assert cli.main(["eval", "--benchmark", "cifar10-jpeg", "--model", "resnet20", "--detectors", dets,
                     "--limit", str(limit), "--out", str(out), "--no-progress", "--device", "cpu",
                     "--data-root", str(DATA_ROOT), "--bootstrap", "50"]) == 0
    return out


def test_item10_compare_refuses_what_compares_nothing(tmp_path, capsys):
    need_data("cifar10", "test.zip")
    a = _eval_run(tmp_path, "a", "msp,energy")
    b = _eval_run(tmp_path, "b", "gen")
    capsys.readouterr()
    cases = [(["compare", str(a), "--a", "msp"], "needs two different detectors"),
             (["compare", str(a), "--a", "msp", "--b", "msp"], "needs two different detectors"),
             (["compare", str(a), str(b), "--b", "gen"], "detector 'gen' is not in"),
             (["compare", str(a), "--a", "msp", "--b", "energy", "--bootstrap", "0"], "bootstrap must be an integer")]
    for argv, message in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "n_resamples" not in err
    cert = tmp_path / "cert"
    cert.mkdir()
    (cert / "results.json").write_text(json.dumps({"command": "certify"}))
    assert cli.main(["compare", str(cert), "--a", "x", "--b", "y"]) == 2
    assert "holds no per-input certified bounds" in capsys.readouterr().err


# 11 ----------------------------------------------------------------- detector files and batches
def test_item11_detector_files_and_batches(fitted, cnn, images, tmp_path):
    p = tmp_path / "det.json"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    with pytest.raises(ValueError, match="not a saved ross-ood detector .*not a UTF-8 JSON"):
        ross_ood.Detector.load(p, cnn)
    fitted["ross"].save(p)
    doc = json.loads(p.read_text())
    del doc["state"]
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="state missing or malformed"):
        ross_ood.Detector.load(p, cnn)
    ds = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))
    with pytest.raises(ValueError, match="Dataset yields single images; wrap it in torch.utils.data.DataLoader"):
        ross_ood.BaseScoreDetector(cnn, base="msp").fit(ds)
    with pytest.raises(ValueError, match="must hold the images under 'x'; got keys \\['image'\\]"):
        ross_ood.BaseScoreDetector(cnn, base="msp").fit([{"image": images}])
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    a = ross_ood.BaseScoreDetector(cnn, base="msp").fit(loader).threshold_
    assert a == ross_ood.BaseScoreDetector(cnn, base="msp").fit(images).threshold_


# 12 ----------------------------------------------------------------- mean / std
def test_item12_mean_std_must_match_channels_and_units():
    with pytest.raises(ValueError, match="1 entries but the network's first convolution takes 3 input channels"):
        ross_ood.wrap(SmallCNN(), [0.5], [0.25])
    with pytest.raises(ValueError, match="4 entries but the network's first convolution takes 3"):
        ross_ood.wrap(SmallCNN(), [0.5] * 4, [0.25] * 4)
    with pytest.raises(ValueError, match="mean is in pixel units .* divide 0-255 statistics by 255"):
        ross_ood.wrap(SmallCNN(), [125.3, 123.0, 113.9], [63.0, 62.1, 66.7])


# 13 ----------------------------------------------------------------- unsafe pickles, no leftovers
class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_item13_protocol4_code_pickle_is_refused_as_unsafe(tmp_path):
    from ross_ood.models import CheckpointError, load_checkpoint
    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"state_dict": _Evil()}, protocol=4))
    with pytest.raises(CheckpointError, match=r"refused to load .*could run code \(STACK_GLOBAL (posix|os)\.system\)"):
        load_checkpoint(p)


def test_item13_refused_runs_leave_no_output_folder(tmp_path, capsys):
    from ross_ood.models import ARCHS
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    c100 = tmp_path / "c100.pt"  # a 100-class ResNet-20 (random weights)
    torch.save({"state_dict": ARCHS["resnet20"](num_classes=100).state_dict()}, c100)
    cases = [["eval", "--checkpoint", str(bad)],
             ["attack", "--precision", "fp16", "--detectors", "msp"],
             ["eval", "--benchmark", "cifar10", "--model", "resnet20-cifar100", "--checkpoint", str(c100)]]
    for i, extra in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert cli.main([*extra, "--out", str(out), "--limit", "4", "--no-progress", "--device", "cpu",
                         "--data-root", str(DATA_ROOT)]) == 2, extra
        assert not out.exists(), extra
    assert "100 classes but benchmark 'cifar10' has 10" in capsys.readouterr().err


# 14 ----------------------------------------------------------------- diagnose verdict
def test_item14_convergence_table_says_not_converged():
    from ross_ood.engine.diagnose import convergence_verdict, render_diagnosis
    row = {"detector": "median-msp", "eps": 2 / 255, "objective": "min", "auroc_1x": 0.4792,
           "auroc_2x steps": 0.3333, "diff_2x steps": (-0.1459, -0.25, -0.05),
           "auroc_2x copies": 0.4800, "diff_2x copies": (0.0008, -0.01, 0.012)}
    assert convergence_verdict(row) == "not converged: 2x steps lowers it by 14.59 [-25.00, -5.00]"
    ok = {**row, "diff_2x steps": (-0.004, -0.02, 0.01)}
    assert convergence_verdict(ok) == "converged"
    doc = {"set_sizes": {"id_test": 4, "tin": 4}, "eps_list": [2 / 255], "eps_space": "pixel",
           "convergence": [row], "unbounded_eps": 1.0, "unbounded": [], "plans": [], "silent": []}
    assert "| not converged: 2x steps lowers it by 14.59" in render_diagnosis(doc)


# 15 ----------------------------------------------------------------- CLI text
def test_item15_cli_texts(capsys):
    import argparse
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    texts = {name: p.format_help() for name, p in sub.choices.items()}
    for name, text in texts.items():
        flat = " ".join(text.split())
        assert "(default: the benchmark's) (default: none)" not in flat, name
        assert "95%%" not in flat and " no stop " not in flat, name
    assert "about an hour" not in texts["reproduce"] and "36 min" in " ".join(texts["reproduce"].split())
    assert cli.main(["eval", "--detectors", "rosss-msp", "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "median-<score>, quantile-<score> or ross-<score>" in err


def test_item15_no_interval_footnote_without_intervals():
    from ross_ood.runs.tables import CI_NOTE, ci_note
    assert ci_note([{"auroc": 0.5, "auroc_lo": None}]) == ""
    assert ci_note([{"auroc": 0.5, "auroc_lo": 0.4}]) == CI_NOTE


# 16 (import cycle): tests/test_leaderboard.py::test_leaderboard_module_does_not_import_the_cli
# 17 (API docs outside .venv): tests/test_docs.py::test_api_reference_builds_without_warnings
