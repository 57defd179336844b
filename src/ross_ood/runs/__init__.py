"""Stored runs: the run folder on disk (``runs.rundir``, the one owner of its files), tables,
paired comparisons, combining parts, the leaderboard, reports and plots. Imports the core only."""
from ross_ood._lazy import submodules

__getattr__ = submodules(__name__)  # ross_ood.engine.report etc. on first use
