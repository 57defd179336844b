import os
from pathlib import Path

import pytest
import torch
from torch import nn

import ross_ood

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: one torch thread per worker (and per process it starts)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

DATA_ROOT = Path(os.environ.get("ROSS_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def tiny_linear_model():
    """Images 1x1x2 -> features h = the 2 pixels -> logits z = W h + b (K = 3).

    W = [[1, 0], [0, 1], [1, 1]], b = [0, 0, -1]; mean 0, std 1 (no normalisation).
    """
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    net = nn.Sequential(nn.Flatten(), lin)
    return ross_ood.wrap(net, [0.0], [1.0])


class SmallCNN(nn.Module):
    def __init__(self, classes=5, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, classes)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)
        return self.fc(h)


@pytest.fixture
def tiny():
    return tiny_linear_model()


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return ross_ood.wrap(SmallCNN(), [0.5, 0.4, 0.3], [0.25, 0.2, 0.3])


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 3, 8, 8, generator=g)


def need_data(*parts):
    p = DATA_ROOT.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (set ROSS_DATA)")
    return p


def stored_arrays(run_dir, stem="input_scores"):
    """A run folder's per-input arrays read straight from disk with numpy (independently of
    ross_ood.runs.rundir): {key: float64 array}."""
    import numpy as np
    with np.load(Path(run_dir) / f"{stem}.npz", allow_pickle=False) as z:
        return {k: z[k].astype(np.float64) for k in z.files}


def write_stored_arrays(run_dir, flat, stem="input_scores"):
    import numpy as np
    np.savez_compressed(Path(run_dir) / f"{stem}.npz", **{k: np.asarray(v) for k, v in flat.items()})


@pytest.fixture(autouse=True)
def _no_extra_data(tmp_path_factory, monkeypatch):
    """Tests see no extra data root (``ROSS_EXTRA_DATA``, e.g. a packed lossless CIFAR-10 training
    set in ~/.cache): the same data here as on CI. A test that needs one sets it itself."""
    if "ROSS_EXTRA_DATA" not in os.environ:
        monkeypatch.setenv("ROSS_EXTRA_DATA", str(tmp_path_factory.mktemp("no-extra-data")))


@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory):
    """The measured speeds behind precision ``auto`` go to a cache of the test session's, not the
    user's (``ross_ood.precision``); each worker measures each network once."""
    if "ROSS_PRECISION_CACHE" not in os.environ:
        os.environ["ROSS_PRECISION_CACHE"] = str(tmp_path_factory.mktemp("precision") / "precision.json")


def readme_images(root):
    """The files the README's own-images lines read: a folder of 8 PNGs in two classes (40 x 48 px)
    and a ZIP of 4 JPEGs (64 x 64), under ``root`` (``my_images``)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for k in range(8):
        d = root / "val" / ("cat" if k % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{k}.png")
    with zipfile.ZipFile(root / "other.zip", "w") as z:
        for k in range(4):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
            z.writestr(f"img{k}.jpg", buf.getvalue())
