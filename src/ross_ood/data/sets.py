"""Image data sets: class-folder ZIP archives, image folders, IDX files, OpenOOD image lists,
torchvision data sets (optional), and seeded synthetic noise (see ``image`` for the
conventions every set follows).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ross_ood.data.image import (
    IMAGE_EXTENSIONS,
    ImageSet,
    SubsetView,
    class_labels,
    decode_image,
    digest,
    stratified_subset,
)
from ross_ood.noise import pair_seed

__all__ = ["ImageSet", "ZipImageSet", "FolderImageSet", "IdxImageSet", "ImageListSet", "SyntheticSet", "TensorSet",
           "TorchvisionSet", "SubsetView", "open_set", "IMAGE_EXTENSIONS", "stratified_subset"]


class ZipImageSet(ImageSet):
    """A ZIP archive of images, ``CLASS/FILE`` members (labels = sorted class folders) or flat."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, classes: list[str] | None = None):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"archive not found: {self.path}")
        try:
            with zipfile.ZipFile(self.path) as z:
                infos = {i.filename: i for i in z.infolist() if i.filename.lower().endswith(IMAGE_EXTENSIONS)}
                members = sorted(infos)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{self.path} is not a readable ZIP archive: {e}") from None
        if not members:
            raise ValueError(f"{self.path} holds no images (extensions {IMAGE_EXTENSIONS})")
        self.members = members
        self._signature = digest((m, infos[m].CRC, infos[m].file_size) for m in members)
        self.name = name or self.path.stem
        self.labels, self.classes = class_labels(members)
        if classes is not None and self.classes is not None:
            missing = set(self.classes) - set(classes)
            if missing:
                raise ValueError(f"{self.path}: class folders {sorted(missing)} not in the given class list")
            index = {c: k for k, c in enumerate(classes)}
            self.labels = np.array([index[m.split("/")[-2]] for m in members], dtype=np.int64)
            self.classes = list(classes)
        self._zip: zipfile.ZipFile | None = None
        self._pid = None

    def __len__(self):
        return len(self.members)

    def _image(self, i):
        if self._zip is None or self._pid != os.getpid():  # one handle per worker process
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        name = self.members[i]
        return decode_image(self._zip.read(name), f"{name} in {self.path}")

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_zip"] = None
        return d

    def describe(self):
        return f"{self.name} (ZIP {self.path}, {len(self)} images)"

    def signature(self):
        return self._signature


class FolderImageSet(ImageSet):
    """A folder of images: ``root/CLASS/FILE`` (labelled) or ``root/FILE`` (unlabelled)."""

    def __init__(self, root: str | os.PathLike, name: str | None = None):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"{self.root} holds no images (extensions {IMAGE_EXTENSIONS})")
        self.files = files
        self.name = name or self.root.name
        self.labels, self.classes = class_labels(files)

    def __len__(self):
        return len(self.files)

    def _image(self, i):
        p = self.root / self.files[i]
        return decode_image(p.read_bytes(), str(p))

    def describe(self):
        return f"{self.name} (folder {self.root}, {len(self)} images)"

    def signature(self):
        stats = ((f, st.st_size, st.st_mtime_ns) for f in self.files for st in [(self.root / f).stat()])
        return digest(stats)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, file has {len(body)} "
                         "(truncated or corrupt)")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


class IdxImageSet(ImageSet):
    """MNIST-style IDX files (gzip'd or plain): images (N, H, W) and optional labels (N,)."""

    def __init__(self, images: str | os.PathLike, labels: str | os.PathLike | None = None, name: str | None = None):
        super().__init__()
        self.images_path = Path(images)
        if not self.images_path.is_file():
            raise FileNotFoundError(f"IDX image file not found: {self.images_path}")
        self.data = _read_idx(self.images_path)
        if self.data.ndim != 3:
            raise ValueError(f"{self.images_path}: IDX images must be (N, H, W), got {self.data.shape}")
        if labels is not None:
            lab = _read_idx(Path(labels))
            if lab.shape != (self.data.shape[0],):
                raise ValueError(f"{labels}: {lab.shape[0]} labels for {self.data.shape[0]} images")
            self.labels = lab.astype(np.int64)
        self.name = name or self.images_path.name.split("-")[0]

    def __len__(self):
        return self.data.shape[0]

    def _image(self, i):
        return Image.fromarray(self.data[i], mode="L")

    def describe(self):
        return f"{self.name} (IDX {self.images_path}, {len(self)} images)"

    def signature(self):
        h = hashlib.blake2b(self.data.tobytes(), digest_size=16)
        if self.labels is not None:
            h.update(self.labels.tobytes())
        return h.hexdigest()


class ImageListSet(ImageSet):
    """OpenOOD v1.5 benchmark layout: an image list whose lines are ``relative/path label``,
    with paths relative to ``image_root`` (e.g. ``images_classic/``)."""

    def __init__(self, imglist: str | os.PathLike, image_root: str | os.PathLike, name: str | None = None):
        super().__init__()
        self.imglist, self.image_root = Path(imglist), Path(image_root)
        if not self.imglist.is_file():
            raise FileNotFoundError(f"OpenOOD image list not found: {self.imglist}")
        paths, labels = [], []
        for k, line in enumerate(self.imglist.read_text().splitlines()):
            line = line.strip()
            if not line:
                continue
            parts = line.split(" ")
            if len(parts) < 2:
                raise ValueError(f"{self.imglist}:{k + 1}: expected 'path label', got {line!r}")
            paths.append(parts[0])
            try:
                labels.append(int(parts[1]))
            except ValueError:
                raise ValueError(f"{self.imglist}:{k + 1}: label {parts[1]!r} is not an integer") from None
        if not paths:
            raise ValueError(f"{self.imglist} lists no images")
        self.paths, self.labels = paths, np.array(labels, dtype=np.int64)
        self.name = name or self.imglist.stem

    def __len__(self):
        return len(self.paths)

    def describe(self):
        return f"{self.name} (OpenOOD list {self.imglist}, images under {self.image_root}, {len(self)} images)"

    def signature(self):
        def stat(p):
            try:
                st = p.stat()
                return st.st_size, st.st_mtime_ns
            except OSError:
                return None
        return digest([self.imglist.read_bytes(), *(stat(self.image_root / q) for q in self.paths)])

    def _image(self, i):
        p = self.image_root / self.paths[i]
        if not p.is_file():
            raise FileNotFoundError(f"image {p} listed in {self.imglist} is missing")
        return decode_image(p.read_bytes(), str(p))


class SyntheticSet(ImageSet):
    """Seeded noise images: ``gaussian`` (N(0.5, 0.25^2) clipped to [0, 1]) or ``uniform``.
    Image i depends only on (seed, kind, i)."""

    KINDS = {"gaussian": 1, "uniform": 2}

    def __init__(self, kind: str, count: int = 10000, seed: int = 0, size: int = 32):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"synthetic set must be one of {sorted(self.KINDS)}, got {kind!r}")
        if count < 1:
            raise ValueError(f"synthetic set needs count >= 1, got {count}")
        self.kind, self.count, self.seed, self.native = kind, int(count), int(seed), int(size)
        self.name = f"{kind}-noise"

    def __len__(self):
        return self.count

    def _image(self, i):
        rng = np.random.default_rng(pair_seed(self.seed, self.KINDS[self.kind], i, 0))
        shape = (self.native, self.native, 3)
        a = rng.normal(0.5, 0.25, shape) if self.kind == "gaussian" else rng.random(shape)
        return Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), mode="RGB")

    def describe(self):
        return f"{self.name} (synthetic, {self.count} images of {self.native} px, seed {self.seed})"


class TorchvisionSet(ImageSet):
    """A torchvision data set by class name (``CIFAR10``, ``SVHN``, ...), already on disk."""

    def __init__(self, dataset: str, root: str | os.PathLike, **kwargs):
        super().__init__()
        try:
            import torchvision.datasets as tvd
        except Exception as e:  # ImportError, or the operator error of a mismatched build
            raise ImportError(f"torchvision data sets need torchvision (pip install ross-ood[vision]): {e}") from None
        if not hasattr(tvd, dataset):
            raise ValueError(f"torchvision has no data set {dataset!r}")
        self.ds = getattr(tvd, dataset)(root=str(root), download=False, **kwargs)
        self.name = dataset.lower()
        targets = getattr(self.ds, "targets", None) or getattr(self.ds, "labels", None)
        self.labels = None if targets is None else np.asarray(targets, dtype=np.int64)

    def __len__(self):
        return len(self.ds)

    def _image(self, i):
        img = self.ds[i][0]
        return img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))


def open_set(spec: str, name: str | None = None, seed: int = 0) -> ImageSet:
    """A set from a path or a spec: ``PATH.zip``, a folder, ``PATH-images-idx3-ubyte[.gz]``,
    ``openood:IMGLIST:IMAGE_ROOT``, ``synthetic:gaussian|uniform[:COUNT]``,
    ``torchvision:NAME:ROOT``."""
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        count = int(parts[2]) if len(parts) > 2 else 10000
        return SyntheticSet(parts[1], count=count, seed=seed)
    if spec.startswith("openood:"):
        _, imglist, root = spec.split(":", 2)
        return ImageListSet(imglist, root, name=name)
    if spec.startswith("torchvision:"):
        _, ds, root = spec.split(":", 2)
        return TorchvisionSet(ds, root)
    p = Path(spec)
    if p.is_dir():
        return FolderImageSet(p, name=name)
    if p.suffix == ".zip":
        return ZipImageSet(p, name=name)
    if "idx3-ubyte" in p.name:
        lab = p.with_name(p.name.replace("images-idx3", "labels-idx1"))
        return IdxImageSet(p, lab if lab.exists() else None, name=name)
    if not p.exists():
        raise FileNotFoundError(f"data set not found: {spec}")
    raise ValueError(f"cannot tell the format of {spec}: give a .zip, a folder, an IDX image file, "
                     "openood:IMGLIST:ROOT, synthetic:gaussian or torchvision:NAME:ROOT")


class TensorSet(ImageSet):
    """Images held in memory: a (N, C, H, W) tensor in [0, 1], or what a DataLoader or another
    iterable of batches yields (tensors, (x, y) tuples, dicts with ``x``), gathered once on the
    CPU. ``prepare`` refuses a channel count or side other than the model's (images are never
    resized silently); pixels that are not finite or leave [0, 1] are refused by name."""

    def __init__(self, data, name: str = "images"):
        super().__init__()
        import torch

        from ross_ood.detectors.base import iter_batches  # the one reader of tensors / DataLoaders / batches
        if isinstance(data, torch.Tensor):
            x = data
        else:
            parts = [b.detach().cpu() for b, _ in iter_batches(data, 1)]
            if not parts:
                raise ValueError(f"{name}: no images")
            x = torch.cat(parts)
        if x.dim() != 4:
            raise ValueError(f"{name}: images must have shape (N, C, H, W), got {tuple(x.shape)}")
        if len(x) == 0:
            raise ValueError(f"{name}: no images")
        if not x.is_floating_point():
            raise TypeError(f"{name}: images must be floats in [0, 1], got {x.dtype} (divide uint8 images by 255)")
        x = x.detach().cpu().float()
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name}: pixels must be finite and in [0, 1] (got min {float(x.min()):.3g}, max "
                             f"{float(x.max()):.3g}); give images before normalisation")
        self.x, self.name = x, name
        self._signature = digest([tuple(x.shape), hashlib.sha256(x.numpy().tobytes()).hexdigest()])

    def __len__(self):
        return len(self.x)

    def prepare(self, channels: int, size: int | None, pre_size: int | None = None) -> "TensorSet":
        c, h, w = self.x.shape[1:]
        if c != channels or (size is not None and (h, w) != (size, size)):
            want = f"{channels} x {size} x {size}" if size is not None else f"{channels} channels"
            raise ValueError(f"{self.name}: images are {c} x {h} x {w}, the model takes {want}; resize them "
                             "yourself (nothing is resized silently)")
        return super().prepare(channels, size, pre_size)

    def __getitem__(self, i: int):
        if i < 0 or i >= len(self):
            raise IndexError(f"index {i} out of range for {self.name} ({len(self)} images)")
        return self.x[i], -1

    def describe(self):
        c, h, w = self.x.shape[1:]
        return f"{self.name} (in memory, {len(self)} images of {c} x {h} x {w})"

    def signature(self):
        return self._signature
