"""The jobs behind the command line, one module per command over shared start-up and
results writing (``common``): ``ross eval``, ``ross attack``, ``ross certify``, ``ross sweep``,
``ross train``.
Each takes its typed settings (``ross_ood.cli.settings``)."""
from ross_ood.cli.jobs.attack import run_attack
from ross_ood.cli.jobs.certify import run_certify
from ross_ood.cli.jobs.eval import run_eval
from ross_ood.cli.jobs.sweep import run_sweep
from ross_ood.cli.jobs.train import run_train

__all__ = ["run_eval", "run_attack", "run_certify", "run_sweep", "run_train", "JOBS"]

JOBS = {"eval": run_eval, "attack": run_attack, "certify": run_certify, "sweep": run_sweep, "train": run_train}
