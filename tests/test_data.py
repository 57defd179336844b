"""Loaders on small data the tests build themselves, subsets and benchmark splits."""
import gzip
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ross_ood.data import (
    FolderImageSet,
    IdxImageSet,
    ImageListSet,
    SyntheticSet,
    ZipImageSet,
    open_set,
    stratified_subset,
)
from ross_ood.data.image import to_tensor

from .conftest import DATA_ROOT, need_data


def _img(seed, size=(6, 5), mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _png(arr):
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def class_tree(tmp_path):
    arrays = {}
    for c, cls in enumerate(["cat", "ant"]):
        for i in range(3):
            arrays[f"{cls}/{i:03d}.png"] = _img(10 * c + i, size=(6, 6))
    return arrays


def test_zip_loader(tmp_path, class_tree):
    z = tmp_path / "set.zip"
    with zipfile.ZipFile(z, "w") as f:
        for k, a in class_tree.items():
            f.writestr(k, _png(a))
        f.writestr("README.txt", "not an image")
    ds = ZipImageSet(z).prepare(3, 6)
    assert len(ds) == 6 and ds.classes == ["ant", "cat"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # sorted members: ant/... then cat/...
    x, y = ds[4]
    assert y == 1
    want = torch.from_numpy(class_tree["cat/001.png"]).permute(2, 0, 1).float() / 255
    assert torch.equal(x, want)


def test_folder_loader_labelled_and_flat(tmp_path, class_tree):
    for k, a in class_tree.items():
        p = tmp_path / "tree" / k
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
    ds = FolderImageSet(tmp_path / "tree").prepare(3, 6)
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(ds[0][0], torch.from_numpy(class_tree["ant/000.png"]).permute(2, 0, 1).float() / 255)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(_img(1)).save(flat / "a.png")
    fs = FolderImageSet(flat)
    assert fs.labels is None and fs[0][1] == -1


def _write_idx(path, arr, magic_type=0x08):
    header = bytes([0, 0, magic_type, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_loader_and_grayscale_to_rgb(tmp_path):
    imgs = np.stack([_img(i, size=(4, 4), mode="L") for i in range(5)])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    ds = open_set(str(tmp_path / "t10k-images-idx3-ubyte.gz")).prepare(3, 4)
    assert isinstance(ds, IdxImageSet) and len(ds) == 5 and ds.labels.tolist() == [0, 1, 2, 3, 4]
    x, y = ds[2]
    assert x.shape == (3, 4, 4) and y == 2
    for c in range(3):  # grayscale repeated into RGB
        assert torch.equal(x[c], torch.from_numpy(imgs[2]).float() / 255)
    gray = ds.prepare(1, 4)[2][0]
    assert gray.shape == (1, 4, 4)


def test_idx_truncated(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        IdxImageSet(p)


def test_openood_imglist(tmp_path):
    root = tmp_path / "images_classic"
    (root / "cifar10" / "test").mkdir(parents=True)
    arrays = [_img(i, size=(8, 8)) for i in range(3)]
    lines = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(root / "cifar10" / "test" / f"{i}.png")
        lines.append(f"cifar10/test/{i}.png {i + 4}")
    lst = tmp_path / "test_cifar10.txt"
    lst.write_text("\n".join(lines) + "\n")
    ds = open_set(f"openood:{lst}:{root}").prepare(3, 8)
    assert isinstance(ds, ImageListSet) and len(ds) == 3 and ds.labels.tolist() == [4, 5, 6]
    assert torch.equal(ds[1][0], torch.from_numpy(arrays[1]).permute(2, 0, 1).float() / 255)
    lst.write_text("cifar10/test/0.png notalabel\n")
    with pytest.raises(ValueError, match="not an integer"):
        ImageListSet(lst, root)


def test_resize_and_centre_crop():
    a = np.zeros((20, 40), np.uint8)
    a[:, 18:22] = 255  # a bright vertical bar in the middle
    x = to_tensor(Image.fromarray(a), 1, 10)
    assert x.shape == (1, 10, 10)
    assert x[0, :, 4:6].mean() > 0.8 and x[0, :, 0].max() == 0 and x[0, :, 9].max() == 0


def test_corrupt_image_is_named(tmp_path):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("cls/good.png", _png(_img(0)))
        f.writestr("cls/broken.png", b"\x89PNG not really")
    ds = ZipImageSet(z)
    with pytest.raises(ValueError, match="corrupt image cls/broken.png"):
        ds[0]
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a readable ZIP"):
        ZipImageSet(tmp_path / "notzip.zip")


def test_synthetic_is_seeded():
    a = SyntheticSet("gaussian", count=5, seed=1).prepare(3, 32)
    b = SyntheticSet("gaussian", count=5, seed=1).prepare(3, 32)
    c = SyntheticSet("gaussian", count=5, seed=2).prepare(3, 32)
    assert torch.equal(a[3][0], b[3][0]) and not torch.equal(a[3][0], c[3][0])
    u = SyntheticSet("uniform", count=3).prepare(3, 32)[0][0]
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean().item() - 0.5) < 0.05
    with pytest.raises(ValueError, match="synthetic set must be one of"):
        SyntheticSet("pink")


def test_stratified_subset():
    labels = np.repeat(np.arange(10), 1000)  # class-sorted, like the archives
    idx = stratified_subset(labels.size, 200, labels, seed=0)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200
    assert np.bincount(labels[idx], minlength=10).tolist() == [20] * 10
    assert not np.array_equal(idx[:20], np.arange(20))  # never the first k of a class
    assert np.array_equal(idx, stratified_subset(labels.size, 200, labels, seed=0))
    assert not np.array_equal(idx, stratified_subset(labels.size, 200, labels, seed=1))
    unl = stratified_subset(50, 10, None, seed=0)
    assert len(set(unl.tolist())) == 10


def test_cifar10_jpeg_benchmark_split_is_disjoint_and_stratified():
    need_data("cifar10", "test.zip")
    from ross_ood.data import build_benchmark
    b = build_benchmark("cifar10-jpeg", DATA_ROOT, 3, 32)
    val, test = b.val, b.id
    assert len(val) == 1000 and len(test) == 9000
    assert set(val.indices.tolist()).isdisjoint(set(test.indices.tolist()))
    assert np.bincount(val.labels).tolist() == [100] * 10
    assert set(b.groups.items()) == {("tin", "near"), ("mnist", "far"), ("fashion-mnist", "far")}
    assert len(b.ood["tin"]) == 10000  # the old benchmark keeps every Tiny ImageNet class


@pytest.mark.parametrize("name,near_other,id_classes", [("cifar10", "cifar100", 10), ("cifar100", "cifar10", 100)])
def test_real_cifar_benchmarks(name, near_other, id_classes):
    """Lossless ID sets; the other CIFAR and Tiny ImageNet (without its CIFAR classes) near, MNIST /
    Fashion-MNIST far; 1,000 stratified validation images carved out."""
    need_data("cifar10-png", "test.zip")
    need_data("cifar100", "test.zip")
    import yaml

    from ross_ood.data import build_benchmark
    from ross_ood.data.benchmarks import TIN_CIFAR_OVERLAP, TIN_OE_CLASSES, tin_oe_set
    b = build_benchmark(name, DATA_ROOT, 3, 32)
    assert set(b.groups.items()) == {(near_other, "near"), ("tin", "near"), ("mnist", "far"),
                                     ("fashion-mnist", "far")}
    assert len(b.val) == 1000 and len(b.id) == 9000
    assert np.bincount(b.val.labels).tolist() == [1000 // id_classes] * id_classes
    assert str(b.id.base.path).endswith(("cifar10-png/test.zip", "cifar100/test.zip"))
    assert b.id.base.path.suffix == ".zip" and b.id.base.members[0].endswith(".png")  # lossless
    cifar = set(yaml.safe_load(TIN_CIFAR_OVERLAP.read_text()))
    oe = set(yaml.safe_load(TIN_OE_CLASSES.read_text()))
    assert cifar.isdisjoint(oe) and len(oe) == (200 - len(cifar)) // 2
    tin = b.ood["tin"]
    kept = {tin.classes[k] for k in np.unique(tin.labels)}
    assert kept.isdisjoint(cifar | oe) and len(kept) == 200 - len(cifar) - len(oe)
    assert len(tin) == 50 * len(kept)  # 50 validation images per class
    oe_set = tin_oe_set(DATA_ROOT)  # the outlier-exposure half: the other classes, none a CIFAR one
    assert {oe_set.classes[k] for k in np.unique(oe_set.labels)} == oe and len(oe_set) == 50 * len(oe)
    assert len(b.ood[near_other]) == 10000


def test_tin_exclusion_list_is_checked(tmp_path):
    """Every listed class has a reason and is a class of the archive; an unknown one is refused."""
    import yaml

    from ross_ood.data.benchmarks import TIN_CIFAR_OVERLAP, exclude_classes, tin_exclusions
    listed = tin_exclusions()
    assert len(listed) == len(yaml.safe_load(TIN_CIFAR_OVERLAP.read_text()))
    assert all("CIFAR-10" in r for r in listed.values())  # each names the CIFAR class it belongs to
    arch = tmp_path / "t.zip"
    with zipfile.ZipFile(arch, "w") as z:
        for i, c in enumerate(["n01", "n01", "n02", "n03"]):
            z.writestr(f"{c}/{i}.png", _png(_img(i)))
    ds = ZipImageSet(arch)
    kept = exclude_classes(ds, {"n02": "why"})
    assert kept.indices.tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match=r"names 1 class\(es\) .* does not have: n09"):
        exclude_classes(ds, {"n02": "why", "n09": "typo"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("n01: ''\n")
    with pytest.raises(ValueError, match="class 'n01' has no reason"):
        tin_exclusions(bad)
    bad.write_text("[n01\n")
    with pytest.raises(ValueError, match="cannot read it"):
        tin_exclusions(bad)


def test_benchmark_refuses_wrong_class_count_and_names_missing_archive(tmp_path):
    from ross_ood.data import build_benchmark
    with pytest.raises(ValueError, match="the classifier has 100 classes but benchmark 'cifar10' has 10"):
        build_benchmark("cifar10", DATA_ROOT, 3, 32, num_classes=100)
    for d in ("cifar10-png", "cifar100", "tinyimagenet32"):
        (tmp_path / d).mkdir()
    (tmp_path / "cifar10-png" / "test.zip").write_bytes(b"PK\x03\x04 not really a zip")
    for f in ("cifar100/test.zip", "tinyimagenet32/val.zip"):
        (tmp_path / f).write_bytes(b"")
    for d in ("mnist", "fashion-mnist"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"benchmark 'cifar10', set 'id': .*cifar10-png/test.zip is not a readable ZIP"):
        build_benchmark("cifar10", tmp_path, 3, 32)
    (tmp_path / "cifar100" / "test.zip").unlink()
    with pytest.raises(FileNotFoundError, match=r"benchmark 'cifar100' needs files missing .*cifar100/test.zip"):
        build_benchmark("cifar100", tmp_path, 3, 32)


@pytest.mark.slow
def test_extra_ood_sharing_an_id_image_is_refused_and_openood_names_join_far(tmp_path):
    need_data("cifar10-png", "test.zip")
    from ross_ood.data import ZipImageSet as Z
    from ross_ood.data import build_benchmark
    src = Z(DATA_ROOT / "cifar10-png" / "test.zip")
    folder = tmp_path / "svhn"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(_img(100 + i, (32, 32))).save(folder / f"{i}.png")
    b = build_benchmark("cifar10", DATA_ROOT, 3, 32, limit=8, extra_ood={"svhn": str(folder), "mine": str(folder)})
    assert b.groups["svhn"] == "far" and b.groups["mine"] == "extra"
    with zipfile.ZipFile(src.path) as z:  # one ID test image, re-saved losslessly under another name
        (folder / "copy.png").write_bytes(z.read(src.members[1234]))
    with pytest.raises(ValueError, match=r"--ood svhn: its image \d+ is image 1234 of the ID set"):
        build_benchmark("cifar10", DATA_ROOT, 3, 32, limit=8, extra_ood={"svhn": str(folder)})


def test_unknown_benchmark_and_missing_files(tmp_path):
    from ross_ood.data import build_benchmark
    with pytest.raises(ValueError, match="unknown benchmark 'cifar11'"):
        build_benchmark("cifar11", tmp_path, 3, 32)
    with pytest.raises(FileNotFoundError, match="needs files missing"):
        build_benchmark("openood-cifar10", tmp_path, 3, 32)


def test_torchvision_sets_fail_clearly_without_torchvision(tmp_path):
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match=r"need torchvision \(pip install ross-ood\[vision\]\)"):
            open_set(f"torchvision:CIFAR10:{tmp_path}")
        from ross_ood.models import load_model
        with pytest.raises(ImportError, match="needs torchvision"):
            load_model("tv:resnet18", checkpoint=tmp_path / "x.pt")
    else:  # pragma: no cover - torchvision does not import beside this project's pinned CPU torch
        with pytest.raises(Exception):
            open_set(f"torchvision:CIFAR10:{tmp_path}")  # nothing on disk, and no download
