"""``ross attack``: robustness of detectors under L-inf attacks (PGD-Min / PGD-Max / PGD-Both): a
front over ``engine.report.attack_report``, the call under ``ross_ood.robustness_report``."""
from __future__ import annotations

from ross_ood.cli.jobs.common import base_doc, clean_run, finish
from ross_ood.cli.settings import AttackSettings
from ross_ood.engine.report import attack_report
from ross_ood.runs.rundir import save_input_scores

__all__ = ["run_attack"]


def run_attack(st: AttackSettings) -> dict | None:
    """Run ``ross attack``; returns the results document (rank 0) or None (other ranks)."""
    run = clean_run(st)
    clean, job = run.result, run.job
    stop = None
    if st.part_value is not None:  # a piece stops attacking where the whole run would: its thresholds
        import dataclasses  # come from the clean scores of all the images (cheap beside the attack)

        from ross_ood.cli.jobs.common import open_benchmark
        from ross_ood.engine.evaluate import evaluate_benchmark
        whole = open_benchmark(dataclasses.replace(st, part=None), run.model, run.root)
        stop = evaluate_benchmark(run.model, whole, run.dets, job.cache, st.batch_size, st.block_size, st.workers,
                                  job.prog, 0, st.seed).scores
    rep = attack_report(run.model, run.bench, run.dets, clean.scores, clean.records, clean.means,
                        eps_list=st.eps_values, objectives=st.objective, eps_space=st.eps_space, targets=st.target,
                        budget=st.attack_budget, seed=st.seed, cache=job.cache, batch_size=st.attack_batch,
                        block_size=st.block_size, progress_factory=job.prog, n_resamples=st.bootstrap,
                        stop_scores=stop)
    if job.rank != 0:
        return None
    save_input_scores(job.out, clean.scores, {k: v for k, v in rep.scores.items() if k[1] != "clean"})
    fields = dict(rep.doc, set_sizes=clean.sizes, wall_time_s=clean.wall_time_s + rep.doc["wall_time_s"])
    doc = base_doc("attack", job, run.root, model=run.model_name, id_accuracy=clean.id_accuracy, taus=clean.taus,
                   notes=clean.notes, **fields)
    doc = finish(job, doc)
    if st.diagnose:
        _diagnose(st, run)
    return doc


def _diagnose(st: AttackSettings, run) -> None:
    import json

    from ross_ood.engine.diagnose import diagnose_attack, plot_curves, render_diagnosis
    from ross_ood.store import atomic_write_text
    d = diagnose_attack(run.model, run.bench, run.dets, run.result.scores, st.eps_values, st.eps_space, st.attack_budget,
                        st.seed, run.job.cache, st.attack_batch, st.block_size, run.job.prog,
                        n_resamples=st.bootstrap or 1000)
    atomic_write_text(run.job.out / "diagnosis.json", json.dumps(d))
    atomic_write_text(run.job.out / "diagnosis.md", render_diagnosis(d))
    plot_curves(d, run.job.out / "objective-curves.png")
