"""Mixed precision: one place that says what ``--precision`` means on which device.

``fp32`` runs as written. ``bf16`` wraps the network's forward in ``torch.autocast`` with
bfloat16 on the CPU (AVX-512 BF16 machines run it about 2x faster) or CUDA; ``fp16`` does the
same with float16 on CUDA only (the CPU has no fast float16 convolutions), and training then
needs a loss scale (``grad_scaler``). Scores and metrics stay float32/float64: autocast only
changes the precision inside the network; what callers report is cast back.
"""
from __future__ import annotations

import contextlib

import torch

from ross_ood.validate import check_choice

__all__ = ["PRECISIONS", "check_precision", "autocast", "grad_scaler", "network_precision"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: str | torch.device | None = None) -> str:
    """``precision`` if it is known and runs on ``device`` (fp16 needs CUDA)."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp16" and device is not None and torch.device(device).type == "cpu":
        raise ValueError("precision 'fp16' needs a CUDA device (the CPU has no fast float16 kernels); "
                         "use 'bf16' on the CPU")
    return precision


def autocast(precision: str, device: str | torch.device):
    """The context that runs a forward pass at ``precision`` on ``device``."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device):
    """A loss scaler for fp16 training on CUDA (float16 gradients underflow without one);
    None otherwise (bf16 has float32's exponent range and needs none)."""
    if precision == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


@contextlib.contextmanager
def network_precision(model, precision: str):
    """Run ``model``'s network (a ``ModelWrapper``) at ``precision`` inside the block: autocast
    around the network only, its logits and features cast back to float32, so that the scores
    computed from them (a softmax near 1, say) keep float32's resolution. Restored on exit."""
    check_precision(precision, model.device)
    old = model.precision
    model.precision = precision
    try:
        yield model
    finally:
        model.precision = old
