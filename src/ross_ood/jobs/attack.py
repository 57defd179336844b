"""``ross attack``: robustness of detectors under L-inf attacks (PGD-Min / PGD-Max)."""
from __future__ import annotations

from dataclasses import asdict

from ..adversarial import attack_benchmark
from ..evaluate import evaluate_benchmark
from ..metrics import mean_over_sets
from ..settings import AttackSettings
from .common import base_doc, build_detectors, finish, open_benchmark, open_model, start_job

__all__ = ["run_attack"]


def run_attack(st: AttackSettings) -> dict | None:
    """Run ``ross attack``; returns the results document (rank 0) or None (other ranks)."""
    job = start_job(st)
    model, model_name, root = open_model(st, job.dev)
    bench = open_benchmark(st, model, root)
    dets = build_detectors(st, model)
    clean = evaluate_benchmark(model, bench, dets, job.cache, st.batch_size, st.block_size, st.workers, job.prog)
    records, wall = attack_benchmark(model, bench, dets, clean.arrays, st.eps_values, st.objective, st.eps_space,
                                     st.target, st.budget, st.seed, job.cache, st.attack_batch, st.block_size,
                                     job.prog)
    if job.rank != 0:
        return None
    doc = base_doc("attack", job, root, model=model_name, id_accuracy=clean.id_accuracy, clean=clean.records,
                   clean_means=clean.means, results=records, means=mean_over_sets(records), taus=clean.taus,
                   set_sizes=clean.sizes, groups=bench.groups, notes=clean.notes, eps_space=st.eps_space,
                   attack_settings=asdict(st.budget), eps_list=st.eps_values, targets=st.target,
                   detectors=[{"name": n, **d.config()} for n, d in dets.items()],
                   wall_time_s=clean.wall_time_s + wall)
    return finish(job, doc)
