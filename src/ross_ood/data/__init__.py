"""Data sets, benchmark definitions and the data root."""
from __future__ import annotations

import os
from pathlib import Path

from ross_ood.data.benchmarks import BENCHMARKS, Benchmark, BenchmarkDef, build_benchmark
from ross_ood.data.sets import (
    FolderImageSet,
    IdxImageSet,
    ImageListSet,
    ImageSet,
    SubsetView,
    SyntheticSet,
    TorchvisionSet,
    ZipImageSet,
    open_set,
    stratified_subset,
)

__all__ = ["default_data_root", "BENCHMARKS", "Benchmark", "BenchmarkDef", "build_benchmark",
           "ImageSet", "ZipImageSet", "FolderImageSet", "IdxImageSet", "ImageListSet", "SyntheticSet",
           "TorchvisionSet", "SubsetView", "open_set", "stratified_subset"]


def default_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else $ROSS_DATA, else ``../shared/data`` (from the working directory or
    beside this checkout) when it exists, else the user cache directory (for downloads)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ROSS_DATA")
    if env:
        return Path(env)
    for cand in (Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[4] / "shared" / "data"):
        if cand.is_dir():
            return cand
    from ross_ood.store import user_cache_dir
    return user_cache_dir()
