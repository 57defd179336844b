"""What every command's job starts with and ends with: output folder and saved settings,
cache, model, benchmark, detectors, and the results document (device, torch.distributed and
progress bars: ``runtime``; the files: ``runs.rundir``).

Each job takes typed settings (``settings``), runs under torchrun unchanged (every process
computes its blocks, rank 0 writes the results) and returns the results document on rank 0
(None on the other ranks).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ross_ood.cli.runtime import setup_runtime
from ross_ood.cli.settings import Settings
from ross_ood.detectors import Detector, make_detector
from ross_ood.progress import bars
from ross_ood.runs.rundir import prepare_out, write_results
from ross_ood.store import BlockCache, atomic_write_text, dist_info

__all__ = ["Job", "start_job", "open_model", "open_benchmark", "open_model_and_benchmark", "build_detectors", "finish",
           "set_fingerprints", "base_doc", "CleanRun", "clean_run"]


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
        from ross_ood.precision import check_precision
        check_precision(st.precision, dev)
    opened = open_inputs(dev) if open_inputs is not None else None
    out = Path(st.out)
    rank, world = dist_info()
    if rank == 0:
        prepare_out(out)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(st.to_dict(), sort_keys=True))
    return Job(st, dev, out, rank, world, BlockCache(out / "cache"), bars(st.progress)), opened


def open_model(st: Settings, dev: torch.device, name: str | None = None):
    """The model ``name`` (default: the settings' model, else the benchmark's); returns
    (model, its name, data root)."""
    from ross_ood.data import BENCHMARKS, default_data_root
    from ross_ood.models import load_model
    root = default_data_root(st.data_root)
    name = name or (st.model if isinstance(st.model, str) else None) or BENCHMARKS[st.benchmark].model
    ckpt = st.checkpoint
    if getattr(st, "zoo", None):  # a zoo of one's own
        from ross_ood.cli.plugins import read_zoo
        own = read_zoo(st.zoo)
        if name in own:
            spec, own_ckpt = own[name]
            return _factory(spec, ckpt or own_ckpt, dev), name, root
    if ":" in name and not name.startswith("tv:"):  # MODULE:FACTORY or FILE.py:FACTORY, the user's own network
        return _factory(name, ckpt, dev), name, root
    return load_model(name, root, checkpoint=st.checkpoint, device=dev), name, root


def _factory(spec, checkpoint, dev):
    from ross_ood.cli.plugins import factory_model
    return factory_model(spec, checkpoint, dev)


def open_benchmark(st: Settings, model, root):
    """The settings' benchmark for ``model`` (a classifier with another class count, channel count
    or input size than the benchmark's own model is refused: images are never converted silently)."""
    from ross_ood.data import BENCHMARKS, build_benchmark
    from ross_ood.models import ZOO
    ref = ZOO.get(BENCHMARKS[st.benchmark].model)
    if ref is not None:
        size = getattr(model, "input_size", None)
        if model.channels != ref.channels or (size is not None and size != ref.input_size):
            raise ValueError(f"the model takes {model.channels}-channel images of {size or '?'} px but benchmark "
                             f"{st.benchmark!r} has {ref.channels}-channel images of {ref.input_size} px (its own "
                             f"model: {BENCHMARKS[st.benchmark].model}); give a benchmark of the model's input")
    return build_benchmark(st.benchmark, root, model.channels, model.input_size, limit=st.limit, seed=st.seed,
                           split_seed=st.split_seed, extra_ood=st.extra_ood, only_extra=st.only_extra,
                           num_classes=getattr(model, "num_classes", None), ood_sets=st.ood_sets,
                           part=st.part_value)


def open_model_and_benchmark(st: Settings, dev: torch.device, name: str | None = None):
    """(model, model name, data root, benchmark)."""
    model, name, root = open_model(st, dev, name)
    return model, name, root, open_benchmark(st, model, root)


def build_detectors(st: Settings, model, sigma: float | None = None, n_samples: int | None = None,
                    root: Path | None = None) -> dict[str, Detector]:
    """The settings' detectors on ``model`` (unfitted), by name. Base scores fitted on training
    statistics (knn, mahalanobis, vim, react) get them from ``feature_stats`` (the benchmark's
    training set under ``root``)."""
    from ross_ood.scores import STATS_SCORES, get_score
    smoothing = {"n_samples": n_samples or st.n_samples, "sigma": st.sigma if sigma is None else sigma,
                 "noise_space": st.noise_space, "seed": st.seed, "chunk_size": st.chunk_size,
                 "noise_device": st.noise_device}
    stats, scores = None, {}
    for _, base in st.kinds.values():
        plain = base.removeprefix("pro-")
        if plain in STATS_SCORES and base not in scores:
            if stats is None:
                from ross_ood.data import BENCHMARKS, default_data_root
                from ross_ood.data.benchmarks import stats_set
                from ross_ood.engine.featstats import feature_stats
                data = root or default_data_root(st.data_root)
                stats = feature_stats(model, stats_set(st.benchmark, data), data, limit=st.stats_limit, seed=st.seed,
                                      cache_dir=st.stats_cache, pre_size=BENCHMARKS[st.benchmark].pre_size)
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
    from ross_ood.engine.evaluate import evaluate_benchmark
    def open_inputs(dev):
        model, name, root, bench = open_model_and_benchmark(st, dev)
        return model, name, root, bench, build_detectors(st, model, root=root)  # detector settings refused here too
    job, (model, name, root, bench, dets) = start_job(st, open_inputs)
    res = evaluate_benchmark(model, bench, dets, job.cache, st.batch_size, st.block_size, st.workers, job.prog,
                             st.bootstrap, st.seed)
    return CleanRun(job, model, name, root, bench, dets, res)


def base_doc(command: str, job: Job, root, **extra) -> dict:
    """The fields every results document has."""
    from ross_ood.runs.tables import versions
    st = job.settings
    return {"command": command, "benchmark": st.benchmark, **extra, "seed": st.seed, "data_root": str(root),
            "noise_space": st.noise_space, "config": st.to_dict(), "versions": versions(), "world_size": job.world,
            "device": str(job.dev)}


def finish(job: Job, doc: dict) -> dict:
    """Write results.json / .csv / .md (rank 0) and return the document."""
    from ross_ood.runs.tables import render
    write_results(job.out, doc, render(doc))
    return doc


def set_fingerprints(bench) -> dict:
    """What identifies each set's images (``ross compare`` refuses runs on other images)."""
    from ross_ood.engine.evaluate import set_fingerprint
    return {"id_test": set_fingerprint(bench.id), **{s: set_fingerprint(ds) for s, ds in bench.ood.items()}}
