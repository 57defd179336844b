"""``ross attack``: robustness of detectors under L-inf attacks (PGD-Min / PGD-Max)."""
from __future__ import annotations

from dataclasses import asdict

from ross_ood.attacks import ATTACK_VERSION
from ross_ood.cli.jobs.common import base_doc, clean_run, finish, set_fingerprints
from ross_ood.cli.settings import AttackSettings
from ross_ood.engine.adversarial import attack_benchmark
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
    res = attack_benchmark(run.model, run.bench, run.dets, clean.scores, eps_list=st.eps_values,
                           objectives=st.objective, eps_space=st.eps_space, targets=st.target, budget=st.budget,
                           seed=st.seed, cache=job.cache, batch_size=st.attack_batch, block_size=st.block_size,
                           progress_factory=job.prog, n_resamples=st.bootstrap, stop_scores=stop)
    if job.rank != 0:
        return None
    save_input_scores(job.out, clean.scores, res.scores)
    doc = base_doc("attack", job, run.root, model=run.model_name, id_accuracy=clean.id_accuracy,
                   clean=clean.records, clean_means=clean.means, results=res.records, means=res.means,
                   taus=clean.taus, set_sizes=clean.sizes, set_fingerprints=set_fingerprints(run.bench),
                   groups=run.bench.groups, notes=clean.notes,
                   eps_space=st.eps_space, attack_settings=asdict(st.budget),
                   attack_version=ATTACK_VERSION, eps_list=st.eps_values,
                   targets=st.target, detectors=[{"name": n, **d.config()} for n, d in run.dets.items()],
                   wall_time_s=clean.wall_time_s + res.wall_s)
    doc = finish(job, doc)
    if st.diagnose:
        _diagnose(st, run)
    return doc


def _diagnose(st: AttackSettings, run) -> None:
    import json

    from ross_ood.engine.diagnose import diagnose_attack, plot_curves, render_diagnosis
    from ross_ood.store import atomic_write_text
    d = diagnose_attack(run.model, run.bench, run.dets, run.result.scores, st.eps_values, st.eps_space, st.budget,
                        st.seed, run.job.cache, st.attack_batch, st.block_size, run.job.prog,
                        n_resamples=st.bootstrap or 1000)
    atomic_write_text(run.job.out / "diagnosis.json", json.dumps(d))
    atomic_write_text(run.job.out / "diagnosis.md", render_diagnosis(d))
    plot_curves(d, run.job.out / "objective-curves.png")
