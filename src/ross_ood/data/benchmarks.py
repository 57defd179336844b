"""Declarative benchmark definitions: ID test set, ID validation split, near- and far-OOD sets.

Paths are relative to the data root. ``val=None`` carves a seeded, class-stratified
validation split of ``val_size`` images out of the ID set and tests on the rest (the
offline weights saw all of the training archives, so calibration data must come from the
test set). The OpenOOD v1.5 definitions read its ``benchmark_imglist`` layout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ross_ood.data.sets import ImageSet, SubsetView, open_set, stratified_subset

__all__ = ["BenchmarkDef", "Benchmark", "BENCHMARKS", "build_benchmark", "resolve_spec", "TIN_CIFAR_OVERLAP",
           "TIN_OE_CLASSES", "tin_exclusions", "exclude_classes", "tin_oe_set", "LOSSLESS_TRAIN", "extra_data_root",
           "training_archive", "verify_manifest", "IMAGENET_CLASSES", "FLOWERS_IMAGENET_OVERLAP", "read_class_list",
           "packed_archive", "stats_set"]

#: the Tiny ImageNet classes that are CIFAR-10 / CIFAR-100 classes, each with its reason
TIN_CIFAR_OVERLAP = Path(__file__).resolve().parent / "tin_cifar_overlap.yaml"
#: half of the other Tiny ImageNet classes, kept for outlier-exposure training (``ross train
#: --outliers tin-oe``): the real benchmarks evaluate Tiny ImageNet on the remaining half only
TIN_OE_CLASSES = Path(__file__).resolve().parent / "tin_oe_classes.yaml"
#: ImageNet-1K's 1,000 WordNet ids with their words, in label order (sorted ids: the order of
#: torchvision's and Caffe's class indices), one ``WNID words`` per line
IMAGENET_CLASSES = Path(__file__).resolve().parent / "imagenet_classes.txt"
#: the Oxford-102 Flowers classes that are ImageNet classes, left out of the imagenet benchmark's flowers set
FLOWERS_IMAGENET_OVERLAP = Path(__file__).resolve().parent / "flowers_imagenet_overlap.yaml"


def read_class_list(path: str | os.PathLike, expected: int | None = None) -> list[str]:
    """The class ids of a class list (first word of each non-empty line), in label order; a list
    that is not ``expected`` long, or repeats an id, is refused by name."""
    try:
        ids = [line.split()[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise ValueError(f"class list {path} cannot be read ({e})") from None
    if expected is not None and len(ids) != expected:
        raise ValueError(f"class list {path} has {len(ids)} classes, expected {expected}")
    if len(set(ids)) != len(ids):
        dup = next(c for c in ids if ids.count(c) > 1)
        raise ValueError(f"class list {path} lists class {dup!r} twice")
    return ids


def tin_exclusions(path: str | os.PathLike = TIN_CIFAR_OVERLAP) -> dict:
    """A class-exclusion list: ``{class name: reason}`` from a YAML mapping of class name to
    ``[words, reason]`` (or to a reason string)."""
    from ross_ood.validate import read_yaml_mapping
    doc = read_yaml_mapping(path, "class-exclusion list", "a non-empty mapping of class name to reason")
    out = {}
    for k, v in doc.items():
        reason = " - ".join(map(str, v)) if isinstance(v, list) else v
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"class-exclusion list {path}: class {k!r} has no reason")
        out[str(k)] = reason
    return out


def tin_oe_set(data_root: str | os.PathLike) -> SubsetView:
    """The outlier-exposure half of Tiny ImageNet (``TIN_OE_CLASSES``): disjoint by class from the
    Tiny ImageNet set of the real benchmarks, and free of CIFAR classes."""
    tin = _open(resolve_spec(TIN, Path(data_root)), "tin-oe", "tin-oe", 0)
    keep = set(tin_exclusions(TIN_OE_CLASSES))
    unknown = sorted(keep - set(tin.classes or []))
    if unknown:
        raise ValueError(f"{TIN_OE_CLASSES} names classes that {tin.describe()} does not have: {', '.join(unknown[:5])}")
    return exclude_classes(tin, {c: "not an outlier-exposure class" for c in tin.classes if c not in keep},
                           "the outlier-exposure split")


def exclude_classes(ds: ImageSet, excluded: dict, source: str = "the exclusion list") -> SubsetView:
    """The images of ``ds`` whose class is not in ``excluded``. A class of the list that the set
    does not have is refused by name (a list for another archive, or a typo, would exclude nothing)."""
    if ds.classes is None or ds.labels is None:
        raise ValueError(f"{ds.describe()} has no classes, so {source} cannot be applied")
    unknown = sorted(set(excluded) - set(ds.classes))
    if unknown:
        raise ValueError(f"{source} names {len(unknown)} class(es) that {ds.describe()} does not have: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    drop = np.array([c in excluded for c in ds.classes])
    return SubsetView(ds, np.flatnonzero(~drop[ds.labels]), ds.name)


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
    num_classes: int | None = None  # classes of the ID set (a classifier with another count is refused)
    exclude: dict = field(default_factory=dict)  # OOD set name -> class-exclusion lists (``tin_exclusions``)
    classes: str | None = None  # a class list (``read_class_list``) giving the ID set's label order
    packed: str | None = None  # archives a packer makes (not in the data root): the command that packs them
    stats: str | None = None  # the ID images for feature statistics (KNN, Mahalanobis, ...); default ``train``


def _oo(imglist: str, root: str = "images_classic") -> str:
    return f"openood:benchmark_imglist/{imglist}:{root}"


TIN = "tinyimagenet32/val.zip"
#: the far-OOD sets of the offline CIFAR benchmarks
CIFAR_FAR = {"mnist": "mnist/t10k-images-idx3-ubyte.gz", "fashion-mnist": "fashion-mnist/t10k-images-idx3-ubyte.gz"}


def _real_cifar(name: str, test: str, other: str, other_test: str, model: str, classes: int, train: str,
                train_note: str = "") -> BenchmarkDef:
    """A real CIFAR benchmark (OpenOOD v1.5's layout on the offline data): the lossless test set,
    the other CIFAR and Tiny ImageNet without its CIFAR classes near, MNIST / Fashion-MNIST far."""
    label = name.upper().replace("CIFAR", "CIFAR-")
    return BenchmarkDef(
        name, id=test, near={other: other_test, "tin": TIN}, far=dict(CIFAR_FAR), model=model, num_classes=classes,
        train=train, exclude={"tin": (TIN_CIFAR_OVERLAP, TIN_OE_CLASSES)},
        note=f"{label}, lossless official test set (1,000-image stratified validation split carved out); "
             f"near-OOD: {other.upper().replace('CIFAR', 'CIFAR-')} test and Tiny ImageNet 32x32 without its "
             f"CIFAR classes and without the half of its classes kept for outlier exposure; far-OOD: MNIST and "
             f"Fashion-MNIST{train_note}")


BENCHMARKS: dict[str, BenchmarkDef] = {
    "cifar10": _real_cifar("cifar10", "cifar10-png/test.zip", "cifar100", "cifar100/test.zip", "resnet20-original", 10,
                           "cifar10/train.zip", " (training set for ross train: the JPEG copy of CIFAR-10's, the "
                                                "only one on disk)"),
    "cifar100": _real_cifar("cifar100", "cifar100/test.zip", "cifar10", "cifar10-png/test.zip", "resnet20-cifar100",
                            100, "cifar100/train.zip"),
    "cifar10-jpeg": BenchmarkDef(
        "cifar10-jpeg", id="cifar10/test.zip", near={"tin": TIN}, far=dict(CIFAR_FAR),
        model="resnet20", num_classes=10, train="cifar10/train.zip",
        note="JPEG copy of CIFAR-10 (the project's first benchmark; its own ID distribution, 1,000-image "
             "stratified validation split carved out), Tiny ImageNet 32x32 (near, all classes), MNIST and "
             "Fashion-MNIST (far)"),
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
    "imagenet": BenchmarkDef(
        "imagenet", id="imagenet/val.zip", near={},
        far={"textures": "imagenet-ood/textures.zip", "flowers": "imagenet-ood/flowers.zip"},
        model="mobilenet-v2-imagenet", num_classes=1000, val_size=300, pre_size=256, classes=str(IMAGENET_CLASSES),
        exclude={"flowers": (FLOWERS_IMAGENET_OVERLAP,)}, stats="imagenet/samples.zip",
        packed="python scripts/pack_imagenet.py MIRRORS (docs/guide/imagenet.md says how to get MIRRORS)",
        note="ImageNet-1K at 224 px (resize 256, centre-crop 224), FAR-OOD ONLY (no near-OOD set of OpenOOD's "
             "ImageNet benchmarks is available offline): ID 1,300 ILSVRC2012 validation images (227 px source; "
             "300-image class-stratified validation split carved out); far-OOD Textures (DTD, 10 of 47 classes) "
             "and Oxford-102 Flowers test without its ImageNet classes (standing in for iNaturalist); feature "
             "statistics from 1,000 ImageNet images, one per class"),
}


def _open(spec: str, bench: str, set_name: str, seed: int) -> ImageSet:
    """``open_set`` with an error that names the benchmark and the set needing the file."""
    try:
        return open_set(spec, name=set_name, seed=seed)
    except (OSError, ValueError) as e:
        raise type(e)(f"benchmark {bench!r}, set {set_name!r}: {e}") from None


def _refuse_overlap(extra: ImageSet, id_set: ImageSet, name: str, channels: int, size: int) -> None:
    """Refuse an extra OOD set that holds an image of the ID set (``content_hash`` of the
    decoded pixels, so a copy or a lossless re-encoding is caught)."""
    from ross_ood.data.image import content_hash
    id_set.prepare(channels, size)
    extra.prepare(channels, size)
    mine = {content_hash(id_set[j][0]): j for j in range(len(id_set))}
    for j in range(len(extra)):
        hit = mine.get(content_hash(extra[j][0]))
        if hit is not None:
            raise ValueError(f"--ood {name}: its image {j} is image {hit} of the ID set ({id_set.describe()}); "
                             "an OOD set must not share images with the ID set")


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


#: lossless training archives that are not in the (size-capped) shared data root: packed by
#: ``scripts/pack_cifar10_train.py`` into the extra data root, preferred by ``ross train`` when present
LOSSLESS_TRAIN = {"cifar10": "cifar10-png/train.zip"}


def extra_data_root() -> Path:
    """Where archives too big for the shared data root live: ``$ROSS_EXTRA_DATA``, else the user
    cache directory (``~/.cache/ross-ood``)."""
    env = os.environ.get("ROSS_EXTRA_DATA")
    if env:
        return Path(env)
    from ross_ood.store import user_cache_dir
    return user_cache_dir()


def verify_manifest(path: Path) -> dict:
    """The JSON manifest beside an archive (``train.zip`` -> ``train.json``), checked against the
    archive's bytes: a missing manifest, or one whose sha256 or count does not match, is refused by name."""
    import hashlib
    import json
    import zipfile
    man = path.with_suffix(".json")
    try:
        doc = json.loads(man.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"archive {path}: its manifest {man.name} cannot be read ({e})") from None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    sha = h.hexdigest()
    if doc.get("sha256") != sha:
        raise ValueError(f"archive {path}: sha256 {sha[:12]}... does not match its manifest "
                         f"({str(doc.get('sha256'))[:12]}...); re-pack it (scripts/pack_cifar10_train.py, "
                         "scripts/pack_imagenet.py)")
    with zipfile.ZipFile(path) as z:
        count = sum(1 for n in z.namelist() if not n.endswith("/"))
    if doc.get("count") != count:
        raise ValueError(f"archive {path}: holds {count} images, its manifest says {doc.get('count')}")
    return doc


def training_archive(benchmark: str, root: Path) -> tuple[Path, dict | None, str]:
    """The ID training archive of ``benchmark`` for ``ross train``: the lossless one
    (``LOSSLESS_TRAIN``, in the data root or ``extra_data_root()``, its manifest verified) when
    present, else the benchmark's own ``train``. Returns (path, manifest or None, a note that says
    which one and, when the lossless one is absent, where it would be)."""
    spec = BENCHMARKS[benchmark]
    rel = LOSSLESS_TRAIN.get(benchmark)
    if rel is not None:
        for base in (Path(root), extra_data_root()):
            if (base / rel).is_file():
                return base / rel, verify_manifest(base / rel), f"lossless training set {base / rel}"
        return (Path(root) / spec.train, None,
                f"lossless training set absent (looked for {Path(root) / rel} and {extra_data_root() / rel}; "
                f"pack it with scripts/pack_cifar10_train.py): using {spec.train}")
    return Path(root) / spec.train, None, f"training set {spec.train}"


_VERIFIED: dict = {}


def packed_archive(rel: str, root: str | os.PathLike, command: str) -> tuple[Path, dict]:
    """A packed archive (``rel``, e.g. ``imagenet/val.zip``) in the data root or ``extra_data_root()``,
    verified against its manifest (once per process and file state). Returns (path, manifest);
    a missing one raises FileNotFoundError naming where it looked and ``command``."""
    for base in (Path(root), extra_data_root()):
        path = base / rel
        if path.is_file():
            st = path.stat()
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
            if key not in _VERIFIED:
                _VERIFIED[key] = verify_manifest(path)
            return path, _VERIFIED[key]
    raise FileNotFoundError(f"archive {rel} is missing (looked in {Path(root)} and {extra_data_root()}): pack it "
                            f"with {command}")


def _refuse_shared_content(id_manifest: dict, ood_manifest: dict, id_path: Path, ood_path: Path) -> None:
    """Refuse an OOD archive that holds an image of the ID archive (the manifests' sha256 of the
    decoded pixels, column ``content_sha256``)."""
    def content(doc):
        cols = doc.get("members_columns") or []
        if "content_sha256" not in cols:
            return {}
        k, m = cols.index("content_sha256"), cols.index("member")
        return {row[k]: row[m] for row in doc.get("members", [])}
    mine = content(id_manifest)
    for h, member in content(ood_manifest).items():
        if h in mine:
            raise ValueError(f"OOD archive {ood_path}: its image {member} is the ID image {mine[h]} of {id_path} "
                             "(same decoded pixels); an OOD set must not share images with the ID set")


def stats_set(name: str, data_root: str | os.PathLike) -> ImageSet:
    """The ID images benchmark ``name`` fits feature statistics on (its ``stats``, else its
    training set), labelled in the benchmark's class order (prepare it with the benchmark's
    ``pre_size``)."""
    from ross_ood.data.sets import ZipImageSet
    d = BENCHMARKS[name]
    rel = d.stats or d.train
    if rel is None:
        raise ValueError(f"benchmark {name!r} has no images for feature statistics")
    path = packed_archive(rel, data_root, d.packed)[0] if d.packed else Path(data_root) / rel
    classes = read_class_list(d.classes, d.num_classes) if d.classes else None
    return ZipImageSet(path, name="train", classes=classes)


def resolve_spec(spec: str, root: Path) -> str:
    if spec.startswith("openood:"):
        _, imglist, img_root = spec.split(":", 2)
        return f"openood:{root / imglist}:{root / img_root}"
    if spec.startswith(("synthetic:", "torchvision:")) or os.path.isabs(spec):
        return spec
    return str(root / spec)


#: OpenOOD v1.5's far-OOD sets for the CIFAR benchmarks: given with ``--ood NAME=PATH`` under
#: one of these names, a set joins the far group (they are not in the offline data root)
OPENOOD_FAR = ("svhn", "texture", "textures", "places365")


def select_sets(d: BenchmarkDef, only: list[str] | None) -> tuple[dict, dict]:
    """(near, far) of ``d`` restricted to ``only`` (set names, or the groups "near" / "far");
    all of them for an empty ``only``. An unknown name is refused, naming the known ones."""
    if not only:
        return dict(d.near), dict(d.far)
    known = [*d.near, *d.far]
    bad = [s for s in only if s not in known and s not in ("near", "far")]
    if bad:
        raise ValueError(f"ood_sets {bad} are not OOD sets of benchmark {d.name!r}: give some of "
                         f"{', '.join(known)}, or near / far")
    keep = {s for s in only if s in known} | (set(d.near) if "near" in only else set()) | (
        set(d.far) if "far" in only else set())
    return {k: v for k, v in d.near.items() if k in keep}, {k: v for k, v in d.far.items() if k in keep}


def check_num_classes(name: str, num_classes: int | None) -> None:
    """Refuse a classifier whose class count is not the benchmark's (before any work)."""
    d = BENCHMARKS.get(name)
    if d is not None and d.num_classes is not None and num_classes is not None and num_classes != d.num_classes:
        raise ValueError(f"the classifier has {num_classes} classes but benchmark {name!r} has {d.num_classes} "
                         f"(its default model: {d.model})")


def build_benchmark(name: str, data_root: str | os.PathLike, channels: int, size: int, limit: int | None = None,
                    seed: int = 0, split_seed: int = 0, extra_ood: dict | None = None,
                    only_extra: bool = False, num_classes: int | None = None,
                    ood_sets: list[str] | None = None, part: tuple[int, int] | None = None) -> Benchmark:
    """Open every set of benchmark ``name`` prepared for a model of ``channels`` x ``size``.

    ``limit`` keeps a seeded random subset of each set (class-stratified where labels exist).
    ``extra_ood`` adds sets (name -> path/spec); with ``only_extra`` they replace the defaults.
    An extra set named like an OpenOOD far-OOD set (``OPENOOD_FAR``) joins the far group; an
    extra set holding an image of the ID set (same decoded pixels) is refused.
    ``num_classes``: the classifier's class count, refused when it is not the benchmark's.
    ``ood_sets``: only these of the benchmark's OOD sets (names, or "near" / "far"; default all).
    ``part`` (K, M): of the ID test set and every OOD set (after ``limit``), only the K-th of M
    disjoint interleaved parts (positions K-1, K-1+M, ...): a long run in pieces (``ross combine``).
    The ID validation split stays whole.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    check_num_classes(name, num_classes)
    d = BENCHMARKS[name]
    near, far = select_sets(d, ood_sets)
    root = Path(data_root)
    if d.packed:  # archives of a packer: located (data root, then the extra data root) and verified
        found, absent = {}, []
        for spec in dict.fromkeys([d.id, *near.values(), *far.values()]):
            try:
                found[spec] = packed_archive(spec, root, d.packed)
            except FileNotFoundError:
                absent.append(spec)
        if absent:
            raise FileNotFoundError(f"benchmark {name!r} needs archive(s) {', '.join(absent)}, missing from {root} "
                                    f"and {extra_data_root()}: pack them with {d.packed}")
        for spec in [*near.values(), *far.values()]:
            _refuse_shared_content(found[d.id][1], found[spec][1], found[d.id][0], found[spec][0])
        d = replace(d, id=str(found[d.id][0]), near={k: str(found[v][0]) for k, v in d.near.items() if v in found},
                    far={k: str(found[v][0]) for k, v in d.far.items() if v in found})
        near, far = select_sets(d, ood_sets)
    missing = []
    for spec in [d.id, d.val or d.id, *near.values(), *far.values()]:
        target = resolve_spec(spec, root)
        path = target.split(":")[1] if target.startswith("openood:") else target
        if not target.startswith(("synthetic:", "torchvision:")) and not Path(path).exists():
            missing.append(path)
    if missing:
        raise FileNotFoundError(f"benchmark {name!r} needs files missing under {root}: "
                                + ", ".join(sorted(set(missing))[:6]) + (" ..." if len(set(missing)) > 6 else ""))
    notes = [d.note] + ([f"OOD sets: only {', '.join([*near, *far])} (ood_sets {', '.join(ood_sets)})"]
                        if ood_sets else [])
    if d.classes:
        from ross_ood.data.sets import ZipImageSet
        full_id = ZipImageSet(resolve_spec(d.id, root), name="id", classes=read_class_list(d.classes, d.num_classes))
    else:
        full_id = _open(resolve_spec(d.id, root), name, "id", 0)
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
        for group, sets in (("near", near), ("far", far)):
            for k, spec in sets.items():
                ood[k], groups[k] = _open(resolve_spec(spec, root), name, k, seed), group
                if k in d.exclude:
                    full, lists = ood[k], [(lst, tin_exclusions(lst)) for lst in d.exclude[k]]
                    for lst, listed in lists:
                        ood[k] = exclude_classes(ood[k], listed, f"class-exclusion list {lst}")
                    counts = " and ".join(f"the {len(listed)} of {Path(lst).name}" for lst, listed in lists)
                    why = ("the classes of the ID data sets and those kept for outlier exposure"
                           if k == "tin" else "its classes that are ID classes")
                    notes.append(f"{k}: {len(ood[k])} of {len(full)} images, without {why} ({counts})")
    for k, spec in (extra_ood or {}).items():
        if k in ("id_val", "id_test"):
            raise ValueError(f"--ood name {k!r} is reserved")
        ood[k] = _open(spec, name, k, seed)
        groups[k] = "far" if k.lower() in OPENOOD_FAR else "extra"
        _refuse_overlap(ood[k], full_id, k, channels, size)
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
    if part is not None:
        k, m = part

        def piece(s: ImageSet, nm: str) -> ImageSet:
            return SubsetView(s, np.arange(k - 1, len(s), m), nm)
        test, ood = piece(test, "id_test"), {n: piece(v, n) for n, v in ood.items()}
        notes.append(f"part {k}/{m}: the ID test set and every OOD set hold only every {m}-th image from position "
                     f"{k} (a piece of a longer run; ross combine joins the pieces)")
    for s in [val, test, *ood.values()]:
        s.prepare(channels, size, d.pre_size)
    return Benchmark(name, val, test, ood, groups, notes)
