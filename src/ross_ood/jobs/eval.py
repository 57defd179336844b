"""``ross eval``: clean evaluation of detectors on a benchmark."""
from __future__ import annotations

from ..evaluate import evaluate_benchmark
from ..settings import EvalSettings
from .common import base_doc, build_detectors, finish, open_benchmark, open_model, save_scores, start_job

__all__ = ["run_eval"]


def run_eval(st: EvalSettings) -> dict | None:
    """Run ``ross eval``; returns the results document (rank 0) or None (other ranks)."""
    job = start_job(st)
    model, model_name, root = open_model(st, job.dev)
    bench = open_benchmark(st, model, root)
    dets = build_detectors(st, model)
    res = evaluate_benchmark(model, bench, dets, job.cache, st.batch_size, st.block_size, st.workers, job.prog)
    if job.rank != 0:
        return None
    doc = base_doc("eval", job, root, model=model_name, id_accuracy=res.id_accuracy,
                   id_accuracy_val_and_test=res.id_accuracy_val_and_test, results=res.records, means=res.means,
                   taus=res.taus, set_sizes=res.sizes, groups=bench.groups, notes=res.notes,
                   detectors=[{"name": n, **d.config()} for n, d in dets.items()], wall_time_s=res.wall_time_s)
    save_scores(job.out, res.scores)
    return finish(job, doc)
