"""Declarative benchmark definitions: ID test set, ID validation split, near- and far-OOD sets.

Paths are relative to the data root. ``val=None`` carves a seeded, class-stratified
validation split of ``val_size`` images out of the ID set and tests on the rest (the
offline weights saw all of the training archives, so calibration data must come from the
test set). The OpenOOD v1.5 definitions read its ``benchmark_imglist`` layout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .sets import ImageSet, SubsetView, open_set, stratified_subset

__all__ = ["BenchmarkDef", "Benchmark", "BENCHMARKS", "build_benchmark", "resolve_spec"]


@dataclass(frozen=True)
class BenchmarkDef:
    name: str
    id: str
    near: dict
    far: dict
    model: str
    val: str | None = None
    val_size: int = 1000
    pre_size: int | None = None
    note: str = ""
    train: str | None = None  # the ID training set, for ``ross train``


def _oo(imglist: str, root: str = "images_classic") -> str:
    return f"openood:benchmark_imglist/{imglist}:{root}"


BENCHMARKS: dict[str, BenchmarkDef] = {
    "cifar10": BenchmarkDef(
        "cifar10", id="cifar10/test.zip",
        near={"tin": "tinyimagenet32/val.zip"},
        far={"mnist": "mnist/t10k-images-idx3-ubyte.gz", "fashion-mnist": "fashion-mnist/t10k-images-idx3-ubyte.gz"},
        model="resnet20", train="cifar10/train.zip",
        note="offline: JPEG CIFAR-10 test set (1,000-image stratified validation split carved out), "
             "Tiny ImageNet 32x32 (near), MNIST and Fashion-MNIST (far)"),
    "mnist": BenchmarkDef(
        "mnist", id="mnist/t10k-images-idx3-ubyte.gz",
        near={"fashion-mnist": "fashion-mnist/t10k-images-idx3-ubyte.gz"},
        far={"cifar10": "cifar10/test.zip", "tin": "tinyimagenet32/val.zip"},
        model="mnist-cnn",
        note="offline: MNIST test set (1,000-image validation split carved out), Fashion-MNIST (near), "
             "grayscale CIFAR-10 and Tiny ImageNet (far)"),
    "openood-cifar10": BenchmarkDef(
        "openood-cifar10", id=_oo("cifar10/test_cifar10.txt"), val=_oo("cifar10/val_cifar10.txt"),
        near={"cifar100": _oo("cifar10/test_cifar100.txt"), "tin": _oo("cifar10/test_tin.txt")},
        far={k: _oo(f"cifar10/test_{k}.txt") for k in ("mnist", "svhn", "texture", "places365")},
        model="openood-resnet18-cifar10", note="OpenOOD v1.5 CIFAR-10"),
    "openood-cifar100": BenchmarkDef(
        "openood-cifar100", id=_oo("cifar100/test_cifar100.txt"), val=_oo("cifar100/val_cifar100.txt"),
        near={"cifar10": _oo("cifar100/test_cifar10.txt"), "tin": _oo("cifar100/test_tin.txt")},
        far={k: _oo(f"cifar100/test_{k}.txt") for k in ("mnist", "svhn", "texture", "places365")},
        model="openood-resnet18-cifar100", note="OpenOOD v1.5 CIFAR-100"),
    "openood-imagenet200": BenchmarkDef(
        "openood-imagenet200", id=_oo("imagenet200/test_imagenet200.txt", "images_largescale"),
        val=_oo("imagenet200/val_imagenet200.txt", "images_largescale"),
        near={"ssb_hard": _oo("imagenet/test_ssb_hard.txt", "images_largescale"),
              "ninco": _oo("imagenet/test_ninco.txt", "images_largescale")},
        far={"inaturalist": _oo("imagenet/test_inaturalist.txt", "images_largescale"),
             "textures": _oo("imagenet/test_textures.txt", "images_classic"),
             "openimage_o": _oo("imagenet/test_openimage_o.txt", "images_largescale")},
        model="openood-resnet18-imagenet200", pre_size=256, note="OpenOOD v1.5 ImageNet-200 (224 px)"),
}


@dataclass
class Benchmark:
    name: str
    val: ImageSet
    id: ImageSet
    ood: dict  # name -> ImageSet
    groups: dict  # name -> "near" | "far" | "extra"
    notes: list = field(default_factory=list)

    def sets(self) -> dict:
        return {"id_val": self.val, "id_test": self.id, **self.ood}


def resolve_spec(spec: str, root: Path) -> str:
    if spec.startswith("openood:"):
        _, imglist, img_root = spec.split(":", 2)
        return f"openood:{root / imglist}:{root / img_root}"
    if spec.startswith(("synthetic:", "torchvision:")) or os.path.isabs(spec):
        return spec
    return str(root / spec)


def build_benchmark(name: str, data_root: str | os.PathLike, channels: int, size: int, limit: int | None = None,
                    seed: int = 0, split_seed: int = 0, extra_ood: dict | None = None,
                    only_extra: bool = False) -> Benchmark:
    """Open every set of benchmark ``name`` prepared for a model of ``channels`` x ``size``.

    ``limit`` keeps a seeded random subset of each set (class-stratified where labels exist).
    ``extra_ood`` adds sets (name -> path/spec); with ``only_extra`` they replace the defaults.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    d = BENCHMARKS[name]
    root = Path(data_root)
    missing = []
    for spec in [d.id, d.val or d.id, *d.near.values(), *d.far.values()]:
        target = resolve_spec(spec, root)
        path = target.split(":")[1] if target.startswith("openood:") else target
        if not target.startswith(("synthetic:", "torchvision:")) and not Path(path).exists():
            missing.append(path)
    if missing:
        raise FileNotFoundError(f"benchmark {name!r} needs files missing under {root}: "
                                + ", ".join(sorted(set(missing))[:6]) + (" ..." if len(set(missing)) > 6 else ""))
    notes = [d.note]
    full_id = open_set(resolve_spec(d.id, root), name="id")
    if d.val is None:
        val_idx = stratified_subset(len(full_id), d.val_size, full_id.labels, split_seed)
        rest = np.setdiff1d(np.arange(len(full_id)), val_idx)
        val, test = SubsetView(full_id, val_idx, "id_val"), SubsetView(full_id, rest, "id_test")
        notes.append(f"ID validation: {len(val_idx)} images carved out of the ID set (class-stratified, "
                     f"split seed {split_seed}); ID test: the other {len(rest)}")
    else:
        val, test = open_set(resolve_spec(d.val, root), name="id_val"), full_id
    ood, groups = {}, {}
    if not only_extra:
        for group, sets in (("near", d.near), ("far", d.far)):
            for k, spec in sets.items():
                ood[k], groups[k] = open_set(resolve_spec(spec, root), name=k, seed=seed), group
    for k, spec in (extra_ood or {}).items():
        if k in ("id_val", "id_test"):
            raise ValueError(f"--ood name {k!r} is reserved")
        ood[k], groups[k] = open_set(spec, name=k, seed=seed), "extra"
    if not ood:
        raise ValueError("the benchmark has no OOD sets")

    def cut(s: ImageSet, nm: str) -> ImageSet:
        if limit is not None and len(s) > limit:
            idx = stratified_subset(len(s), limit, s.labels, seed)
            return SubsetView(s, idx, nm)
        return s if isinstance(s, SubsetView) else SubsetView(s, np.arange(len(s)), nm)

    if limit is not None:
        notes.append(f"--limit {limit}: each set is a seeded random subset of at most {limit} images "
                     f"(class-stratified where labels exist; seed {seed})")
    val, test = cut(val, "id_val"), cut(test, "id_test")
    ood = {k: cut(v, k) for k, v in ood.items()}
    for s in [val, test, *ood.values()]:
        s.prepare(channels, size, d.pre_size)
    return Benchmark(name, val, test, ood, groups, notes)
