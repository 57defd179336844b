"""The image-set base class, decoding and subsets.

Every set yields ``(x, label)`` with ``x`` a float tensor in [0, 1] of shape (C, S, S):
images are converted to the model's channel count (grayscale -> RGB by repetition, RGB ->
grayscale by PIL's luma) and resized (shorter side) then centre-cropped to ``S`` as
OpenOOD's test transform does. ``label`` is -1 where a set has no labels.
"""
from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageSet", "SubsetView", "IMAGE_EXTENSIONS", "to_tensor", "digest", "decode_image", "class_labels",
           "stratified_subset", "content_hash"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to_tensor(img: Image.Image, channels: int, size: int | None, pre_size: int | None = None) -> torch.Tensor:
    """PIL image -> (C, size, size) float tensor in [0, 1]: OpenOOD's Resize(pre_size) (shorter
    side, bilinear) then CenterCrop(size); ``pre_size`` defaults to ``size``."""
    img = img.convert("RGB" if channels == 3 else "L")
    if size is not None and img.size != (size, size):
        w, h = img.size
        pre = pre_size or size
        scale = pre / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.array(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


class ImageSet(torch.utils.data.Dataset):
    """Base class. Subclasses implement ``__len__`` and ``_image(i) -> PIL.Image``."""

    name: str = "set"
    labels: np.ndarray | None = None
    classes: list[str] | None = None

    def __init__(self):
        self.channels, self.size, self.pre_size = 3, None, None

    def prepare(self, channels: int, size: int | None, pre_size: int | None = None) -> "ImageSet":
        """Set the output channel count, side length and resize-before-crop size; returns self."""
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels, self.size, self.pre_size = channels, size, pre_size
        return self

    def _image(self, i: int) -> Image.Image:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def signature(self) -> str:
        """A digest of what determines the images (member names and CRCs, file sizes and
        times, array bytes): it changes when the contents at the same path change, so cached
        results keyed by it are never reused for other images."""
        return self.describe()

    def __getitem__(self, i: int):
        if i < 0 or i >= len(self):
            raise IndexError(f"index {i} out of range for {self.name} ({len(self)} images)")
        x = to_tensor(self._image(i), self.channels, self.size, self.pre_size)
        y = -1 if self.labels is None else int(self.labels[i])
        return x, y


def digest(items) -> str:
    h = hashlib.blake2b(digest_size=16)
    for it in items:
        h.update(repr(it).encode())
        h.update(b"\0")
    return h.hexdigest()


def content_hash(x: torch.Tensor) -> str:
    """The sha256 of an image as a model sees it (a (C, S, S) tensor in [0, 1], back to 8 bits):
    two files that decode to the same pixels (the same file, or a lossless re-encoding of it,
    as the model's channels and size) hash alike."""
    arr = (x.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode an image; a corrupt one, or one so large that decoding it could exhaust memory
    (a decompression bomb: over PIL's MAX_IMAGE_PIXELS), is refused naming ``where``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"refused image {where}: too many pixels to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"corrupt image {where}: {e}") from None


def class_labels(paths: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    parts = [p.split("/") for p in paths]
    if all(len(p) >= 2 for p in parts):
        classes = sorted({p[-2] for p in parts})
        if len(classes) > 1 or len(paths) == 1:
            index = {c: k for k, c in enumerate(classes)}
            return np.array([index[p[-2]] for p in parts], dtype=np.int64), classes
    return None, None


class SubsetView(ImageSet):
    """The images of ``base`` at ``indices`` (in that order)."""

    def __init__(self, base: ImageSet, indices, name: str | None = None):
        super().__init__()
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"subset indices out of range for {base.name} ({len(base)} images)")
        self.name = name or base.name
        self.labels = None if base.labels is None else base.labels[self.indices]
        self.classes = base.classes

    def prepare(self, channels, size, pre_size=None):
        super().prepare(channels, size, pre_size)
        self.base.prepare(channels, size, pre_size)
        return self

    def __len__(self):
        return int(self.indices.size)

    def __getitem__(self, i):
        if i < 0 or i >= len(self):
            raise IndexError(f"index {i} out of range for {self.name} ({len(self)} images)")
        return self.base[int(self.indices[i])]

    def describe(self):
        return f"{self.name} ({len(self)} of {self.base.describe()})"

    def signature(self):
        return digest([self.base.signature(), self.indices.tobytes()])


def stratified_subset(n_total: int, k: int, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """``k`` of ``n_total`` indices, seeded, proportional to the classes in ``labels`` when
    given (each class shuffled, then classes interleaved by rank / class size). Sorted."""
    if k >= n_total:
        return np.arange(n_total)
    if k < 1:
        raise ValueError(f"subset size must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.permutation(n_total)[:k])
    labels = np.asarray(labels)
    frac = np.empty(n_total)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = rng.permutation(idx.size)
        frac[idx[perm]] = (np.arange(idx.size) + rng.random(idx.size)) / idx.size
    return np.sort(np.argsort(frac, kind="stable")[:k])


