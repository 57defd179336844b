"""What every command's job starts with and ends with: runtime (device, torch.distributed),
output folder and saved settings, cache, progress bars, model, benchmark, detectors, and
the results files.

Each job takes typed settings (``settings``), runs under torchrun unchanged (every process
computes its blocks, rank 0 writes the results) and returns the results document on rank 0
(None on the other ranks).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..detectors import Detector, make_detector
from ..settings import Settings
from ..store import BlockCache, atomic_write_bytes, atomic_write_text, dist_info

__all__ = ["resolve_device", "setup_runtime", "progress_factory", "prepare_out", "Job", "start_job", "open_model", "open_benchmark",
           "open_model_and_benchmark", "build_detectors", "finish",
           "save_scores", "save_input_scores", "set_fingerprints", "base_doc", "CleanRun", "clean_run"]


def resolve_device(device: str, local_rank: int, cuda_available: bool) -> torch.device:
    """The device this rank runs on: 'auto' is this rank's GPU where there is one, else the CPU; a bare
    'cuda' is this rank's GPU (``cuda:LOCAL_RANK``: torch.cuda.set_device refuses a device without index)."""
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    dev = torch.device(device)
    return torch.device("cuda", local_rank) if dev.type == "cuda" and dev.index is None else dev


def setup_runtime(device: str) -> torch.device:
    """Join the torch.distributed group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.is_available())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dev


def progress_factory(enabled: bool):
    if not enabled or dist_info()[0] != 0:
        return None
    from tqdm import tqdm

    def make(name, total):
        return tqdm(total=total, desc=f"{name:>14}", unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)
    return make


def prepare_out(out: Path) -> None:
    """Create the output folder and prove it writable before any computation."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder {str(out)!r}: {e.strerror or e}") from None


@dataclass
class Job:
    """A started job: device, output folder (settings saved), rank, cache, progress."""

    settings: Settings
    dev: torch.device
    out: Path
    rank: int
    world: int
    cache: BlockCache
    prog: object


def start_job(st: Settings, open_inputs=None):
    """Join the runtime, open the job's inputs with ``open_inputs(device)`` (model, benchmark:
    every refusal of a bad input happens here), and only then create the output folder and save
    the settings, so a refused run leaves nothing behind. Returns (job, what ``open_inputs``
    returned)."""
    import yaml
    dev = setup_runtime(st.device)
    if hasattr(st, "precision"):  # "auto" resolved: fp16 on the CPU is refused now, not mid-run
        from ..precision import check_precision
        check_precision(st.precision, dev)
    opened = open_inputs(dev) if open_inputs is not None else None
    out = Path(st.out)
    rank, world = dist_info()
    if rank == 0:
        prepare_out(out)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(st.to_dict(), sort_keys=True))
    return Job(st, dev, out, rank, world, BlockCache(out / "cache"), progress_factory(st.progress)), opened


def open_model(st: Settings, dev: torch.device, name: str | None = None):
    """The model ``name`` (default: the settings' model, else the benchmark's); returns
    (model, its name, data root)."""
    from ..data import BENCHMARKS, default_data_root
    from ..models import load_model
    root = default_data_root(st.data_root)
    name = name or (st.model if isinstance(st.model, str) else None) or BENCHMARKS[st.benchmark].model
    return load_model(name, root, checkpoint=st.checkpoint, device=dev), name, root


def open_benchmark(st: Settings, model, root):
    """The settings' benchmark for ``model`` (a classifier with another class count is refused)."""
    from ..data import build_benchmark
    return build_benchmark(st.benchmark, root, model.channels, model.input_size, limit=st.limit, seed=st.seed,
                           split_seed=st.split_seed, extra_ood=st.extra_ood, only_extra=st.only_extra,
                           num_classes=getattr(model, "num_classes", None), ood_sets=st.ood_sets,
                           part=st.part_value)


def open_model_and_benchmark(st: Settings, dev: torch.device, name: str | None = None):
    """(model, model name, data root, benchmark)."""
    model, name, root = open_model(st, dev, name)
    return model, name, root, open_benchmark(st, model, root)


#: what the feature-statistics cache stores, and the version of its format
STATS_FORMAT = "ross-ood-feature-stats/1"


def feature_stats(st: Settings, model, root: Path):
    """The ``FeatureStats`` of ``model`` on the settings' benchmark's ID training set (a seeded
    class-stratified subset with ``stats_limit``), from the cache when there, else computed and
    cached. The cache file is named by a hash of (model fingerprint, training set signature, limit,
    seed) and records them: a file whose record differs is stale and refused by name."""
    import hashlib
    import json

    from ..data import BENCHMARKS, ZipImageSet
    from ..data.image import SubsetView, stratified_subset
    from ..model import model_fingerprint
    from ..scores import FeatureStats, fit_feature_stats
    spec = BENCHMARKS[st.benchmark]
    train = ZipImageSet(root / spec.train)
    limit = st.stats_limit if st.stats_limit is not None and st.stats_limit < len(train) else None
    if limit is not None:
        train = SubsetView(train, stratified_subset(len(train), limit, train.labels, st.seed), "train")
    train.prepare(model.channels, model.input_size)
    record = {"format": STATS_FORMAT, "model": model_fingerprint(model), "train": train.describe(),
              "train_signature": train.signature(), "limit": limit, "seed": st.seed if limit is not None else None}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
    cache_dir = Path(st.stats_cache) if st.stats_cache else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ross-ood" / "feature-stats"
    path = cache_dir / f"{key}.safetensors"
    from safetensors.torch import load_file, safe_open, save_file
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            saved = json.loads((f.metadata() or {}).get("record", "null"))
        if saved != record:
            diff = sorted(k for k in record if not isinstance(saved, dict) or saved.get(k) != record[k])
            raise ValueError(f"feature-statistics cache {path} is stale: it was made for other {', '.join(diff)}; "
                             "delete it (or give another --stats-cache) to recompute")
        t = load_file(str(path))
        return FeatureStats(t["features"], t["labels"], record["train"], record["model"])
    from ..train import load_images
    x, y = load_images(train)
    stats = fit_feature_stats(model, x, y, source=record["train"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": stats.features, "labels": stats.labels}, str(tmp), metadata={"record": json.dumps(record)})
    os.replace(tmp, path)
    return stats


def build_detectors(st: Settings, model, sigma: float | None = None, n_samples: int | None = None,
                    root: Path | None = None) -> dict[str, Detector]:
    """The settings' detectors on ``model`` (unfitted), by name. Base scores fitted on training
    statistics (knn, mahalanobis, vim, react) get them from ``feature_stats`` (the benchmark's
    training set under ``root``)."""
    from ..scores import STATS_SCORES, get_score
    smoothing = {"n_samples": n_samples or st.n_samples, "sigma": st.sigma if sigma is None else sigma,
                 "noise_space": st.noise_space, "seed": st.seed, "chunk_size": st.chunk_size,
                 "noise_device": st.noise_device}
    stats, scores = None, {}
    for _, base in st.kinds.values():
        plain = base.removeprefix("pro-")
        if plain in STATS_SCORES and base not in scores:
            if stats is None:
                from ..data import default_data_root
                stats = feature_stats(st, model, root or default_data_root(st.data_root))
            scores[base] = get_score(base, stats=stats, **({"model": model} if plain == "vim" else {}))
    return {name: make_detector(name, model, base=scores.get(base), lam=st.lam_for(base), tau_quantile=st.tau_quantile,
                                accept_rate=st.accept_rate, q=st.quantile, **smoothing)
            for name, (_, base) in st.kinds.items()}


@dataclass
class CleanRun:
    """A started job with its model, benchmark and detectors, fitted and evaluated clean."""

    job: Job
    model: object
    model_name: str
    root: Path
    bench: object
    dets: dict
    result: object


def clean_run(st: Settings) -> CleanRun:
    """Start the job, open model and benchmark, build the detectors, evaluate them clean."""
    from ..evaluate import evaluate_benchmark
    def open_inputs(dev):
        model, name, root, bench = open_model_and_benchmark(st, dev)
        return model, name, root, bench, build_detectors(st, model, root=root)  # detector settings refused here too
    job, (model, name, root, bench, dets) = start_job(st, open_inputs)
    res = evaluate_benchmark(model, bench, dets, job.cache, st.batch_size, st.block_size, st.workers, job.prog,
                             st.bootstrap, st.seed)
    return CleanRun(job, model, name, root, bench, dets, res)


def base_doc(command: str, job: Job, root, **extra) -> dict:
    """The fields every results document has."""
    from ..tables import versions
    st = job.settings
    return {"command": command, "benchmark": st.benchmark, **extra, "seed": st.seed, "data_root": str(root),
            "noise_space": st.noise_space, "config": st.to_dict(), "versions": versions(), "world_size": job.world,
            "device": str(job.dev)}


def finish(job: Job, doc: dict) -> dict:
    """Write results.json / .csv / .md (rank 0) and return the document."""
    from ..tables import render, write_results
    write_results(job.out, doc, render(doc))
    return doc


def save_scores(out: Path, scores: dict) -> None:
    """Per-detector per-set scores (and median / D of smoothed ones): ``scores.npz``."""
    flat = {f"{det}|{s}|{k}": v for det, per in scores.items() for s, d in per.items() for k, v in d.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    atomic_write_bytes(out / "scores.npz", buf.getvalue())


def save_input_scores(out: Path, clean_scores: dict, attacked: dict | None = None) -> None:
    """Per-input scores for paired comparisons (``ross compare``), as text: ``input_scores.json``
    with ``DET|clean|SET`` and ``DET|EPS|SIDE|SET|TARGET`` (EPS as repr of the float, SIDE min (ID
    attacked) or max (OOD attacked)); lists of floats (``repr``, exact round trip)."""
    flat = {f"{det}|clean|{s}": np.asarray(v["score"], np.float64).tolist() for det, per in clean_scores.items()
            for s, v in per.items()}
    flat.update({f"{det}|{eps!r}|{side}|{s}|{tgt}": np.asarray(v, np.float64).tolist()
                 for (det, eps, side, s, tgt), v in (attacked or {}).items()})
    import json
    atomic_write_text(out / "input_scores.json", json.dumps(flat))


def set_fingerprints(bench) -> dict:
    """What identifies each set's images (``ross compare`` refuses runs on other images)."""
    from ..evaluate import set_fingerprint
    return {"id_test": set_fingerprint(bench.id), **{s: set_fingerprint(ds) for s, ds in bench.ood.items()}}
