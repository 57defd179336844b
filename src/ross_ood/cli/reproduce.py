"""``ross reproduce``: the paper's tables from one command, then one report.

Presets:
- ``offline``: the tables at a reduced scale on the data in the data root (the JPEG CIFAR-10 copy,
  ``cifar10-jpeg``, ResNet-20): clean eval over 3 seeds (mean ± std), the robustness table
  (transfer, adaptive, worst; eps 2 and 8/255 in normalised units as the paper), the
  lambda / N / sigma sweeps (clean and under the transfer attack), and certificates at two
  sigma with the noise-trained ResNet-20s. Subset sizes are stated in every table.
- ``openood``: the full tables for users with OpenOOD v1.5 data and checkpoints: CIFAR-10,
  CIFAR-100 and ImageNet-200, the three training seeds of each (mean ± std), clean and
  attacked. Refuses, naming what is missing, when the data or checkpoints are not there.

Every step is a normal job with its own folder, cache and results; a killed reproduction
resumes where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["offline_steps", "openood_steps", "run_reproduce", "OPENOOD_CHECKPOINTS"]

PAPER_SMOOTHING = {"n_samples": 25, "sigma": 0.05, "noise_space": "normalized", "lam": "0.01"}
EIGHT = "msp,energy,gen,odin,fdbd,pro-fdbd,ross-msp,ross-fdbd"


def offline_steps(quick: bool = False) -> list[tuple[str, str, dict, list]]:
    """(folder, job, settings overriding the job's defaults, seeds) of the offline preset;
    ``quick`` shrinks it to a smoke test."""
    s = 0.02 if quick else 1.0
    lim = lambda k: max(8, int(k * s))  # noqa: E731
    attack_extra = {"adaptive_steps": 4, "transfer_steps": 4, "attack_n": 4} if quick else {
        "adaptive_steps": 20, "attack_n": 8}
    return [
        ("eval", "eval", {**PAPER_SMOOTHING, "benchmark": "cifar10-jpeg", "model": "resnet20",
                          "detectors": EIGHT, "limit": lim(1000), **({"n_samples": 5} if quick else {})}, [0, 1, 2]),
        ("attack", "attack", {**PAPER_SMOOTHING, "benchmark": "cifar10-jpeg", "model": "resnet20",
                              "detectors": "msp,energy,fdbd,pro-fdbd,ross-msp,ross-fdbd", "eps": "2,8",
                              "eps_space": "normalized", "limit": lim(40), "target": "transfer,adaptive,worst",
                              "restarts": 1, **attack_extra, **({"n_samples": 5} if quick else {})}, [0]),
        ("sweep", "sweep", {**PAPER_SMOOTHING, "benchmark": "cifar10-jpeg", "model": "resnet20",
                            "detectors": "ross-fdbd,ross-msp", "limit": lim(200), "attack_eps": "8",
                            "eps_space": "normalized",
                            **({"n_samples_values": "3,5", "sigma_values": "0.05,0.1", "transfer_steps": 3,
                                "n_samples": 5}
                               if quick else {})}, [0]),
        ("certify", "certify", {"benchmark": "cifar10-jpeg", "detectors": "median-fdbd,ross-fdbd,"
                                "median-msp,ross-msp", "sigma": "0.12,0.25",
                                "model": "resnet20-noise012,resnet20-noise025", "limit": lim(100),
                                "n_samples": 60 if quick else 500, "alpha": 0.001,
                                "radii": "0,0.05,0.1,0.2,0.3,0.5"}, [0]),
    ]


# OpenOOD v1.5 checkpoint folders (results/checkpoints/ of its release), one per training seed
OPENOOD_CHECKPOINTS = {
    "openood-cifar10": ("openood-resnet18-cifar10", "cifar10_resnet18_32x32_base_e100_lr0.1_default"),
    "openood-cifar100": ("openood-resnet18-cifar100", "cifar100_resnet18_32x32_base_e100_lr0.1_default"),
    "openood-imagenet200": ("openood-resnet18-imagenet200", "imagenet200_resnet18_224x224_base_e90_lr0.1_default"),
}


def openood_steps(data_root: Path, checkpoints: Path | None) -> list[tuple[str, str, dict, list]]:
    """The full OpenOOD tables; raises FileNotFoundError naming every missing file."""
    from ross_ood.data import BENCHMARKS
    from ross_ood.data.benchmarks import resolve_spec
    missing = []
    if checkpoints is None:
        missing.append("--checkpoints DIR (OpenOOD v1.5 checkpoint folders)")
    steps = []
    for bench, (model, folder) in OPENOOD_CHECKPOINTS.items():
        d = BENCHMARKS[bench]
        for spec in [d.id, d.val, *d.near.values(), *d.far.values()]:
            target = resolve_spec(spec, data_root)
            _, imglist, img_root = target.split(":", 2)
            for p in (imglist, img_root):
                if not Path(p).exists():
                    missing.append(p)
        ckpts = []
        for seed in (0, 1, 2):
            ck = (checkpoints / folder / f"s{seed}" / "best.ckpt") if checkpoints else None
            if ck is not None and not ck.is_file():
                missing.append(str(ck))
            ckpts.append(ck)
        for k, ck in enumerate(ckpts):
            common = {**PAPER_SMOOTHING, "benchmark": bench, "model": model,
                      "checkpoint": None if ck is None else str(ck), "seed": 0}
            steps.append((f"{bench}/eval/s{k}", "eval", {**common, "detectors": EIGHT}, None))
            steps.append((f"{bench}/attack/s{k}", "attack",
                          {**common, "eps": "2,4,8,16", "eps_space": "normalized",
                           "detectors": "msp,energy,gen,odin,fdbd,pro-fdbd,ross-msp,ross-energy,ross-gen,ross-fdbd",
                           "target": "transfer,adaptive,worst"}, None))
    if missing:
        uniq = list(dict.fromkeys(missing))
        raise FileNotFoundError("the openood preset needs OpenOOD v1.5 data and checkpoints; missing: "
                                + ", ".join(uniq[:8]) + (f" ... ({len(uniq)} in all)" if len(uniq) > 8 else "")
                                + f" (data root {data_root}; run OpenOOD's download script there first)")
    return steps


def _run_job(job: str, cfg: dict) -> dict | None:
    from ross_ood.cli.jobs import JOBS
    from ross_ood.cli.settings import COMMANDS
    return JOBS[job](COMMANDS[job](**cfg))


def _write_doc(folder: Path, doc: dict) -> None:
    from ross_ood.runs.rundir import write_results
    from ross_ood.runs.tables import render
    write_results(folder, doc, render(doc))


def run_reproduce(preset: str, out: str | Path, data_root=None, device: str = "auto", checkpoints=None,
                  quick: bool = False, progress: bool = True, log=None) -> Path:
    """Run a preset into ``out`` and write ``out/report.md``; returns its path."""
    from ross_ood.data import default_data_root
    from ross_ood.runs.report import write_report
    from ross_ood.runs.tables import aggregate
    from ross_ood.store import dist_info
    out = Path(out)
    root = default_data_root(data_root)
    if preset == "offline":
        steps = offline_steps(quick)
    elif preset == "openood":
        steps = openood_steps(root, Path(checkpoints) if checkpoints else None)
    else:
        raise ValueError(f"unknown preset {preset!r}; known: offline, openood")
    say = log or (lambda msg: None)
    groups: dict[str, list[Path]] = {}
    for folder, job, cfg, seeds in steps:
        for seed in (seeds or [None]):
            sub = out / folder / (f"seed{seed}" if seeds and len(seeds) > 1 else "")
            c = dict(cfg, data_root=str(root), device=device, progress=progress, out=str(sub))
            if seed is not None:
                c["seed"] = seed
            say(f"[{preset}] {job} -> {sub}")
            _run_job(job, c)
            if seeds and len(seeds) > 1:
                groups.setdefault(str(out / folder), []).append(sub)
        if folder.endswith(("/s0", "/s1", "/s2")):
            groups.setdefault(str(out / folder.rsplit("/", 1)[0]), []).append(out / folder)
    if dist_info()[0] != 0:
        return out / "report.md"
    # mean ± std over seeds / checkpoints
    for target, subs in groups.items():
        docs = [json.loads((s / "results.json").read_text()) for s in subs]
        _write_doc(Path(target), aggregate(docs, [s.name for s in subs]))
    if preset == "openood":
        for bench in OPENOOD_CHECKPOINTS:
            write_report(out / bench)
    return write_report(out)
