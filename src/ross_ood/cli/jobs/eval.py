"""``ross eval``: clean evaluation of detectors on a benchmark."""
from __future__ import annotations

from ross_ood.cli.jobs.common import base_doc, clean_run, finish, set_fingerprints
from ross_ood.cli.settings import EvalSettings
from ross_ood.runs.rundir import save_input_scores, save_scores

__all__ = ["run_eval"]


def run_eval(st: EvalSettings) -> dict | None:
    """Run ``ross eval``; returns the results document (rank 0) or None (other ranks)."""
    run = clean_run(st)
    res, job = run.result, run.job
    if job.rank != 0:
        return None
    doc = base_doc("eval", job, run.root, model=run.model_name, id_accuracy=res.id_accuracy,
                   id_accuracy_val_and_test=res.id_accuracy_val_and_test, results=res.records, means=res.means,
                   taus=res.taus, set_sizes=res.sizes, set_fingerprints=set_fingerprints(run.bench), groups=run.bench.groups, notes=res.notes,
                   detectors=[{"name": n, **d.config()} for n, d in run.dets.items()], wall_time_s=res.wall_time_s)
    save_scores(job.out, res.scores)
    save_input_scores(job.out, res.scores)
    return finish(job, doc)
