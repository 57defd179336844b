"""The engine: evaluation, attacks on a benchmark, diagnosis and training, over the core.

It takes plain values or small keyword-only configs (never a command's settings) and returns
result objects; it imports the core and ``runs`` (to read stored runs), never ``cli``."""
from ross_ood._lazy import submodules

__getattr__ = submodules(__name__)  # ross_ood.engine.report etc. on first use
