"""Checkpoint loading: good files, wrong keys, truncated files, and a pickle that runs code."""

import numpy as np
import pytest
import torch

from ross_ood.models import CheckpointError, load_checkpoint, load_model, load_state
from ross_ood.models.resnet_cifar import resnet20

from .conftest import DATA_ROOT, need_data


def test_known_file_loads_and_verifies():
    need_data("weights", "resnet20_cifar10jpeg_ft.pt")
    m = load_model("resnet20", DATA_ROOT)
    assert m.channels == 3 and m.input_size == 32
    sd = load_checkpoint(DATA_ROOT / "weights" / "resnet20-12fca82f.th")  # module. prefix stripped
    assert "conv1.weight" in sd and not any(k.startswith("module.") for k in sd)
    load_state(resnet20(), sd)  # no num_batches_tracked entries: accepted


def test_sha_mismatch(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(resnet20().state_dict(), p)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(p, sha256="0" * 64)


def test_wrong_keys_and_shapes(tmp_path):
    sd = resnet20().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["linear.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing keys.*linear.bias.*1 unexpected keys.*extra.weight"):
        load_state(resnet20(), sd)
    sd2 = resnet20(num_classes=100).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatches.*linear.weight: checkpoint \(100, 64\)"):
        load_state(resnet20(), sd2)


def test_truncated_file(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(resnet20().state_dict(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil(str(marker))}, p)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load.*could run code.*GLOBAL") as e:
        load_checkpoint(p)
    assert "not a PyTorch checkpoint" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (b"", "not a PyTorch checkpoint: the file is empty"),
    (b"hello, this is a text file\n", "not a PyTorch checkpoint: it starts with b'hell'"),
    (bytes(range(7, 256)) * 8, "not a PyTorch checkpoint: it starts with"),
    (b"\x80\x02" + bytes(range(256)) * 4, r"not a PyTorch checkpoint \(unreadable pickle"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, match):
    """0-byte, text and random files are 'not a PyTorch checkpoint', never 'would run code'
    (nor a crash of the error handler)."""
    p = tmp_path / "w.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(p)
    assert "run code" not in str(e.value)


def test_model_needs_checkpoint_when_not_bundled():
    with pytest.raises(ValueError, match="no bundled weights"):
        load_model("openood-resnet18-cifar10", DATA_ROOT)
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        load_model("resnet21", DATA_ROOT)


def test_openood_resnet18_state_dict_names():
    from ross_ood.models.resnet18 import ResNet18_32x32, ResNet18_224x224
    k32 = set(ResNet18_32x32().state_dict())
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_var", "fc.weight"} <= k32
    k224 = set(ResNet18_224x224().state_dict())
    assert {"layer3.0.downsample.0.weight", "fc.bias"} <= k224
    assert ResNet18_224x224()(torch.zeros(1, 3, 224, 224)).shape == (1, 200)


def _wrn_parameters(depth: int, width: int, classes: int = 10) -> int:
    """A wide ResNet's parameter count, by hand: conv 3x3 stem, pre-activation blocks (two BN, two
    3x3 convs, a 1x1 shortcut where the width or stride changes), final BN, linear layer."""
    n, c = (depth - 4) // 6, [16, 16 * width, 32 * width, 64 * width]
    total = 3 * c[0] * 9
    for s in range(3):
        for i in range(n):
            cin, cout = (c[s] if i == 0 else c[s + 1]), c[s + 1]
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9 + (cin * cout if i == 0 else 0)
    return total + 2 * c[3] + c[3] * classes + classes


@pytest.mark.parametrize("name,depth,width", [("wrn-16-4", 16, 4), ("wrn-28-10", 28, 10)])
def test_wide_resnets_have_the_published_shape(name, depth, width):
    from ross_ood.models import ARCHS
    net = ARCHS[name]()
    count = sum(p.numel() for p in net.parameters())
    assert count == _wrn_parameters(depth, width)
    if name == "wrn-28-10":
        assert count == 36_479_194  # RobustBench's WideResNet-28-10 on CIFAR-10
    keys = set(net.state_dict())  # RobustBench's names: its checkpoints of this class load
    assert {"conv1.weight", "block1.layer.0.convShortcut.weight", "block2.layer.0.bn1.running_var",
            "block3.layer.1.conv2.weight", "bn1.weight", "fc.weight"} <= keys
    assert "block1.layer.1.convShortcut.weight" not in keys
    m = load_model(name, pretrained=False)
    out = m.outputs(torch.rand(2, 3, 32, 32))
    assert out.logits.shape == (2, 10) and out.features.shape == (2, 64 * width) and m.linear_name == "fc"
    with pytest.raises(ValueError, match="no bundled weights"):
        load_model(name, DATA_ROOT)


def test_real_accuracy_on_a_subset():
    """The fine-tuned ResNet-20 on 500 stratified JPEG CIFAR-10 test images: the data README
    measures 88.36% on all 10,000; a 500-image sample lands within a few points."""
    need_data("cifar10", "test.zip")
    from ross_ood.data import ZipImageSet, stratified_subset
    ds = ZipImageSet(DATA_ROOT / "cifar10" / "test.zip").prepare(3, 32)
    idx = stratified_subset(len(ds), 500, ds.labels, seed=0)
    x = torch.stack([ds[int(i)][0] for i in idx])
    y = torch.tensor(ds.labels[idx])
    m = load_model("resnet20", DATA_ROOT)
    with torch.no_grad():
        acc = (m(x).argmax(1) == y).float().mean().item()
    assert 0.84 <= acc <= 0.93


def _every_fifth(folder):
    """Every fifth of the 10,000 test images of DATA_ROOT/FOLDER/test.zip (2,000) and their labels."""
    need_data(folder, "test.zip")
    from ross_ood.data import ZipImageSet
    from ross_ood.data.image import SubsetView
    from ross_ood.engine.train import load_images
    ds = ZipImageSet(DATA_ROOT / folder / "test.zip").prepare(3, 32)
    return load_images(SubsetView(ds, np.arange(0, 10000, 5)))


def _classifies_as_recorded(name, images, want, tol):
    """The packaged weights of NAME load by zoo name (sha256-checked, no data root) and classify IMAGES
    within TOL of the record's 10,000-image accuracy WANT; returns the model."""
    from ross_ood.engine.train import evaluate_accuracy
    from ross_ood.models import PACKAGED_WEIGHTS, ZOO, load_model, sha256_file
    assert sha256_file(PACKAGED_WEIGHTS / ZOO[name].file) == ZOO[name].sha256
    m = load_model(name)
    x, y = images
    assert abs(evaluate_accuracy(m, x, y) - want) < tol
    return m


@pytest.fixture(scope="module")
def every_fifth_test_image():
    return _every_fifth("cifar10")


@pytest.fixture(scope="module")
def every_fifth_lossless_test_image():
    return _every_fifth("cifar10-png")


@pytest.fixture(scope="module")
def every_fifth_cifar100_test_image():
    return _every_fifth("cifar100")


@pytest.mark.slow
@pytest.mark.parametrize("name,sigma,want", [("resnet20-noise012-e36", 0.12, 0.8295),
                                              ("resnet20-noise012-e52", 0.12, 0.8325),
                                              ("resnet20-noise012-e52-oe", 0.12, 0.8320),
                                              ("resnet20-noise025-e36", 0.25, 0.7509)])
def test_packaged_noise_models_load_and_classify(name, sigma, want, every_fifth_test_image):
    """The packaged weights classify 2,000 test images (every fifth) about as the training record says
    for all 10,000: within 2.5 points, over three standard errors of a 2,000-image accuracy."""
    _classifies_as_recorded(name, every_fifth_test_image, want, 0.025)


@pytest.mark.slow
@pytest.mark.parametrize("name,want", [("resnet20-noise012-e54-adv4-tinoe", 0.7777),
                                       ("resnet20-noise012-e54-fast4-tinoe", 0.7987),
                                       ("resnet20-noise012-e54-fast8-tinoe", 0.7090),
                                       ("resnet20-noise012-e82-fast8-tinoe", 0.7498)])
def test_packaged_adversarial_models_load_and_classify(name, want, every_fifth_lossless_test_image):
    """The adversarially trained models, whose records measure the lossless test set: on 2,000 of those
    images (every fifth) within 3 points of the record's 10,000-image clean accuracy."""
    _classifies_as_recorded(name, every_fifth_lossless_test_image, want, 0.03)


@pytest.mark.slow
@pytest.mark.parametrize("name,want", [("resnet20-cifar100", 0.6517), ("resnet20-cifar100-noise012", 0.4028)])
def test_packaged_cifar100_models_load_and_classify(name, want, every_fifth_cifar100_test_image):
    """The CIFAR-100 models trained here: 100 classes, and on 2,000 test images (every fifth) within 3
    points of the record's 10,000-image accuracy (over three standard errors)."""
    m = _classifies_as_recorded(name, every_fifth_cifar100_test_image, want, 0.03)
    assert m.num_classes == 100
