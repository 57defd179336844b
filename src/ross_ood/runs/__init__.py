"""Stored runs: the run folder on disk (``runs.rundir``, the one owner of its files), tables,
paired comparisons, combining parts, the leaderboard, reports and plots. Imports the core only."""
