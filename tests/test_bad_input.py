"""Bad input found by trying the CLI and the API: each is refused with a clear error that
names the problem, before any work starts (the CLI refuses exactly what the API refuses)."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import ross_ood
from ross_ood import cli
from ross_ood.data import FolderImageSet, IdxImageSet, ZipImageSet
from ross_ood.detectors import BaseScoreDetector
from ross_ood.engine.evaluate import compute_set
from ross_ood.store import BlockCache

from .conftest import DATA_ROOT, need_data

COMMANDS = {"eval": ["--detectors", "msp,ross-fdbd"], "attack": ["--detectors", "ross-fdbd"],
            "certify": ["--detectors", "ross-fdbd"], "sweep": ["--detectors", "ross-fdbd"]}


def _refused(capsys, argv, match):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("lam,match", [("-0.5", "lam must be a finite number >= 0"),
                                       ("nan", "lam must be a finite number >= 0"),
                                       ("inf", "lam must be a finite number >= 0"),
                                       ("fdbd=-1", "lam for 'fdbd' must be a finite number >= 0"),
                                       ("fbdb=0.5", "lam sets fbdb, which match no ross detector")])
def test_cli_refuses_bad_lam_before_any_work(tmp_path, capsys, command, lam, match):
    out = tmp_path / "out"
    _refused(capsys, [command, "--out", str(out), f"--lam={lam}", *COMMANDS[command]], match)
    assert not out.exists()  # refused before the output folder, let alone any computation


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_refuses_infinite_sigma(tmp_path, capsys, command):
    flag = ["--sigma", "inf"] if command != "sweep" else ["--sigma-values", "0.1,inf"]
    _refused(capsys, [command, "--out", str(tmp_path / "o"), *flag, *COMMANDS[command]],
             "sigma must be a finite number")
    with pytest.raises(ValueError, match="sigma must be a finite number"):  # the API says the same
        ross_ood.ROSS(_tiny(), sigma=float("inf"))


def _tiny():
    return ross_ood.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), [0.5] * 3, [0.2] * 3)


@pytest.mark.parametrize("argv,match", [
    (["--restarts", "0"], "restarts must be an integer >= 1, got 0"),
    (["--eot", "0"], "eot must be an integer >= 1, got 0"),
    (["--adaptive-steps", "-1"], "adaptive_steps must be an integer >= 0, got -1"),
    (["--attack-n", "0"], "attack_n must be an integer >= 1"),
    (["--surrogates", "median,gate"], "surrogate must be one of"),
    (["--eps", "8,x"], "eps 'x' is not a number"),
    (["--target", "transfer,best"], "target must be one of"),
    (["--check-every", "0"], "check_every must be an integer >= 1, got 0"),
    (["--detectors", "quantile-msp", "--quantile", "1"], "quantile must be a number in (0, 1), got 1.0"),
])
def test_attack_flags_checked_at_start(tmp_path, capsys, argv, match):
    out = tmp_path / "o"
    _refused(capsys, ["attack", "--out", str(out), *argv], match)
    assert not out.exists()


@pytest.mark.parametrize("ood,match", [
    (["a=x.zip", "a=y.zip"], "--ood name 'a' is given twice"),
    (["tin=x.zip"], "--ood name 'tin' is already a set of benchmark 'cifar10'"),
    (["id_test=x.zip"], "'id_test' is already a set"),
    ([".=x.zip"], "--ood name '.' must start with a letter or digit"),
    (["..=x.zip"], "--ood name '..' must start"),
    (["a/b=x.zip"], "must start with a letter or digit and hold only"),
    (["nopath"], "--ood expects NAME=PATH"),
])
def test_ood_names_refused(tmp_path, capsys, ood, match):
    argv = ["eval", "--out", str(tmp_path / "o")]
    for o in ood:
        argv += ["--ood", o]
    _refused(capsys, argv, match)


@pytest.mark.parametrize("kind", ["file", "under_file", "empty", "proc"])
def test_out_must_be_writable(tmp_path, capsys, kind):
    f = tmp_path / "afile"
    f.write_text("x")
    out, match = {"file": (str(f), "is an existing file"), "under_file": (str(f / "sub"), "which is a file"),
                  "empty": ("", "out must name an output folder"),
                  "proc": ("/proc/ross-ood-test/out", "cannot")}[kind]
    _refused(capsys, ["eval", "--out", out, "--limit", "4"], match)


@pytest.mark.parametrize("device,match", [("banana", "unknown device 'banana'"),
                                          ("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available")])
def test_bad_device(tmp_path, capsys, device, match):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _refused(capsys, ["eval", "--out", str(tmp_path / "o"), "--device", device], match)


def _zip(path, seed):
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as z:
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
            z.writestr(f"c{i % 2}/{i}.png", buf.getvalue())


def _compute(model, ds, cache):
    unit = BaseScoreDetector(model, base="msp").unit()
    return compute_set(model, ds.prepare(3, 8), "x", [unit], cache, block_size=4)[unit.name]["features"]


def test_cache_key_follows_image_contents(cnn, tmp_path):
    """New images at the same path (same count, same names) are recomputed, not read from
    the cache of the old ones: ZIP (names + CRC32), folders (sizes + times), IDX (bytes)."""
    cache = BlockCache(tmp_path / "cache")
    p = tmp_path / "set.zip"
    _zip(p, 0)
    first = _compute(cnn, ZipImageSet(p), cache)
    _zip(p, 1)
    fresh = _compute(cnn, ZipImageSet(p), BlockCache(None))
    again = _compute(cnn, ZipImageSet(p), cache)
    assert not np.allclose(first, fresh) and np.array_equal(again, fresh)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    sig = FolderImageSet(folder).signature()
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(folder / "1.png")
    assert FolderImageSet(folder).signature() != sig
    need_data("mnist", "t10k-images-idx3-ubyte.gz")
    a = IdxImageSet(DATA_ROOT / "mnist" / "t10k-images-idx3-ubyte.gz")
    b = IdxImageSet(DATA_ROOT / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
    assert a.signature() != b.signature() and len(a) == len(b)


def test_half_written_cache_file_is_recomputed(cnn, tmp_path):
    cache = BlockCache(tmp_path / "cache")
    p = tmp_path / "set.zip"
    _zip(p, 0)
    want = _compute(cnn, ZipImageSet(p), cache)
    files = sorted((tmp_path / "cache").rglob("*.npz"))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:40])  # a killed writer's leftovers: BadZipFile when read
    assert np.array_equal(_compute(cnn, ZipImageSet(p), cache), want)
    assert all(np.load(f).files for f in files)  # rewritten whole


def test_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch):
    p = tmp_path / "bomb.zip"
    with zipfile.ZipFile(p, "w") as z:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buf, format="PNG")
        z.writestr("c/huge.png", buf.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4,096 pixels: a 'bomb' here
    ds = ZipImageSet(p).prepare(3, 32)
    with pytest.raises(ValueError, match=r"refused image c/huge.png in .*too many pixels"):
        ds[0]


def test_float64_input_is_cast(cnn, images):
    det = ross_ood.ROSS(cnn, base="msp", n_samples=3).fit(images.double())
    ref = ross_ood.ROSS(cnn, base="msp", n_samples=3).fit(images)
    assert det.tau_ == pytest.approx(ref.tau_)
    torch.testing.assert_close(det.score(images.double()), ref.score(images))
    x = images.double().requires_grad_(True)
    (g,) = torch.autograd.grad(det.score(x).sum(), x)
    assert g.dtype == torch.float64 and g.abs().sum() > 0
    with pytest.raises(ValueError, match="floating-point"):
        det.score((images * 255).to(torch.uint8))


def test_ood_metrics_refuses_non_1d():
    with pytest.raises(ValueError, match=r"id_scores must be 1-D .* got shape \(3, 2\)"):
        ross_ood.ood_metrics(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"ood_scores must be 1-D"):
        ross_ood.ood_metrics(np.zeros(3), np.float64(1.0))


def test_saved_detector_refuses_another_model_and_nan_state(cnn, images, tmp_path):
    det = ross_ood.ROSS(cnn, base="msp", n_samples=3).fit(images)
    det.save(tmp_path / "d.json")
    other = ross_ood.wrap(type(cnn.net)(), [0.5, 0.4, 0.3], [0.25, 0.2, 0.3])
    with pytest.raises(ValueError, match="was fitted on model .* not on this one"):
        ross_ood.load_detector(tmp_path / "d.json", other)
    doc = json.loads((tmp_path / "d.json").read_text())
    doc["state"]["tau_"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="tau_ = nan is not a finite number"):
        ross_ood.load_detector(tmp_path / "nan.json", cnn)
    assert ross_ood.load_detector(tmp_path / "d.json", cnn).tau_ == det.tau_


@pytest.mark.parametrize("device,local,cuda,want", [
    ("auto", 0, False, "cpu"), ("auto", 2, True, "cuda:2"), ("cuda", 0, True, "cuda:0"), ("cuda", 3, True, "cuda:3"),
    ("cuda:1", 3, True, "cuda:1"), ("cpu", 1, True, "cpu")])
def test_resolve_device(device, local, cuda, want):
    """A bare 'cuda' becomes this rank's GPU with its index: torch.cuda.set_device refuses one without
    (the first run on a real GPU failed so, "Expected a torch.device with a specified index")."""
    from ross_ood.cli.runtime import resolve_device
    assert resolve_device(device, local, cuda) == torch.device(want)
