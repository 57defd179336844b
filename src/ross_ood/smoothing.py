"""Seeded Gaussian noise, chunked noisy scoring, smoothing statistics, the ROSS gate.

Determinism that scales: the noise added to input i in draw j depends only on
``(seed, salt, key_i, j)``, never on batch size, batch order, chunking or the number of
processes. ``key_i`` is the input's key: by default a hash of its pixel bytes (so the same
image always gets the same noise wherever it sits), or a key the caller passes (e.g. its
index in a data set). Each (input, draw) pair has its own generator seeded by a
SplitMix64 mix of those integers; torch has no keyed counter-based generator on CPU, and
numpy's SeedSequence does the same job about ten times slower.
By default noise is drawn on the CPU in float32 and moved to the model's device, so CPU and
GPU runs see the same noise. ``noise_device="model"`` draws it on the model's device with
one device generator per pair instead: for large images on a GPU the CPU draw would cost
more than the forward passes. It is still keyed the same way (batch-, chunk- and
process-independent), but a GPU's generator gives other numbers than the CPU's.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from .model import ModelWrapper
from .scores import Score

__all__ = ["NOISE_SPACES", "NOISE_DEVICES", "content_keys", "pair_seed", "draw_noise", "noise_scale", "noisy_scores",
           "median_stats", "ross_gate", "calibrate_tau"]

NOISE_SPACES = ("pixel", "normalized")
_MASK = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def pair_seed(seed: int, salt: int, key: int, j: int) -> int:
    """A 63-bit generator seed for draw ``j`` of the input with key ``key``."""
    z = 0
    for v in (seed, salt, key, j):
        z = _splitmix64(z ^ (int(v) & _MASK))
    return z & ((1 << 63) - 1)


def content_keys(x: torch.Tensor) -> list[int]:
    """One 63-bit key per image: a BLAKE2b hash of its float32 pixel bytes."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return [int.from_bytes(hashlib.blake2b(a.tobytes(), digest_size=8).digest(), "little") >> 1
            for a in arr]


NOISE_DEVICES = ("cpu", "model")


def draw_noise(keys: Sequence[int], draws: Sequence[int], shape: Sequence[int], seed: int,
               salt: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """Standard normal noise, one ``shape`` tensor per (key, draw) pair, drawn on ``device``."""
    device = torch.device(device)
    out = torch.empty((len(keys), *shape), dtype=torch.float32, device=device)
    gen = torch.Generator(device=device)
    for r, (k, j) in enumerate(zip(keys, draws)):
        gen.manual_seed(pair_seed(seed, salt, k, j))
        torch.randn(tuple(shape), generator=gen, out=out[r])
    return out


def noise_scale(model: ModelWrapper, sigma: float, space: str) -> torch.Tensor:
    """Per-channel pixel-space standard deviation, shape (1, C, 1, 1)."""
    if space not in NOISE_SPACES:
        raise ValueError(f"noise_space must be one of {NOISE_SPACES}, got {space!r}")
    if space == "pixel":
        return torch.full_like(model.std, float(sigma))
    return float(sigma) * model.std


def noisy_scores(model: ModelWrapper, x: torch.Tensor, scores: Sequence[Score], n: int, sigma: float,
                 space: str = "pixel", seed: int = 0, keys: Sequence[int] | None = None,
                 chunk_size: int = 128, salt: int = 0, noise_device: str = "cpu") -> dict[str, torch.Tensor]:
    """Scores of ``n`` noisy copies of every input: ``{score.name: (B, n)}``.

    The ``B * n`` noisy images are evaluated ``chunk_size`` at a time, so peak memory does
    not grow with ``n``. Pass-level scores share one forward pass per chunk. In ``pixel``
    space the noisy images are clipped to [0, 1]; in ``normalized`` space they are not (as
    the ROSS authors). Differentiable in ``x`` when called with gradients enabled.
    ``noise_device``: ``cpu`` (the same noise on every device) or ``model`` (drawn on x's device).
    """
    if noise_device not in NOISE_DEVICES:
        raise ValueError(f"noise_device must be one of {NOISE_DEVICES}, got {noise_device!r}")
    gen_device = "cpu" if noise_device == "cpu" else x.device
    if int(n) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    b = x.shape[0]
    if keys is None:
        keys = content_keys(x)
    elif len(keys) != b:
        raise ValueError(f"got {len(keys)} keys for {b} inputs")
    scale = noise_scale(model, sigma, space).to(x.device, x.dtype)
    pairs_i = np.repeat(np.arange(b), n)
    pairs_j = np.tile(np.arange(n), b)
    names = [s.name for s in scores]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate score names {names}")
    shared = [s for s in scores if s.pass_level]
    own = [s for s in scores if not s.pass_level]
    need_feats = any(s.needs_features for s in shared)
    parts: dict[str, list[torch.Tensor]] = {s.name: [] for s in scores}
    for start in range(0, b * n, int(chunk_size)):
        ii = pairs_i[start:start + chunk_size]
        jj = pairs_j[start:start + chunk_size]
        eps = draw_noise([keys[i] for i in ii], jj.tolist(), x.shape[1:], seed, salt, gen_device)
        xn = x[torch.as_tensor(ii, device=x.device)] + eps.to(x.device, x.dtype) * scale
        if space == "pixel":
            xn = xn.clamp(0.0, 1.0)
        if shared:
            out = model.outputs(xn, features=need_feats)
            for s in shared:
                parts[s.name].append(s.from_outputs(out, model))
        for s in own:
            parts[s.name].append(s(model, xn))
    return {k: torch.cat(v).view(b, n) for k, v in parts.items()}


def median_stats(s: torch.Tensor) -> dict[str, torch.Tensor]:
    """Median m (lower middle value for even N, as ``torch.median``), D = mean |s_i - m|,
    and CoV = D / m of a (B, N) matrix of noisy scores, computed in float64."""
    if s.dim() != 2 or s.shape[1] < 1:
        raise ValueError(f"noisy scores must have shape (B, N) with N >= 1, got {tuple(s.shape)}")
    s = s.double()
    m = s.median(dim=1).values
    d = (s - m[:, None]).abs().mean(1)
    # CoV = D / m as the paper; m = 0 would divide by zero, so it divides by 1e-12 there
    cov = d / torch.where(m == 0, torch.full_like(m, 1e-12), m)
    return {"median": m, "D": d, "cov": cov}


def ross_gate(m: torch.Tensor, d: torch.Tensor, tau: float, lam: float) -> torch.Tensor:
    """S = min(m, tau) + max(m - tau, 0) * (1 + lam / (D + 1e-12))."""
    tau_t = torch.as_tensor(tau, dtype=m.dtype, device=m.device)
    return torch.minimum(m, tau_t) + (m - tau_t).clamp_min(0) * (1 + lam / (d + 1e-12))


def calibrate_tau(values, quantile: float = 0.05) -> float:
    """The ``quantile`` of ``values`` (numpy linear interpolation, float64)."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot calibrate on empty ID validation data")
    if not np.isfinite(v).all():
        raise ValueError(f"ID validation scores contain {int((~np.isfinite(v)).sum())} non-finite values")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    return float(np.quantile(v, quantile))
