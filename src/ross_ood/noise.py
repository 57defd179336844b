"""Keyed random draws and per-channel scales: the randomness every layer shares.

Determinism that scales: the noise added to input i in draw j depends only on
``(seed, salt, key_i, j)``, never on batch size, batch order, chunking or the number of
processes. ``key_i`` is the input's key: by default a hash of its pixel bytes (so the same
image always gets the same noise wherever it sits), or a key the caller passes (e.g. its
index in a data set). Each (input, draw) pair has its own generator seeded by a
SplitMix64 mix of those integers; torch has no keyed counter-based generator on CPU, and
numpy's SeedSequence does the same job about ten times slower.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from ross_ood.validate import SPACES, check_choice

__all__ = ["pair_seed", "content_keys", "draw_noise", "channel_scale"]

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


def draw_noise(keys: Sequence[int], draws: Sequence[int], shape: Sequence[int], seed: int,
               salt: int = 0, device: str | torch.device = "cpu", uniform: bool = False) -> torch.Tensor:
    """One ``shape`` tensor per (key, draw) pair, drawn on ``device``: standard normal, or
    uniform on [0, 1) with ``uniform``."""
    device = torch.device(device)
    out = torch.empty((len(keys), *shape), dtype=torch.float32, device=device)
    gen = torch.Generator(device=device)
    sample = torch.rand if uniform else torch.randn
    for r, (k, j) in enumerate(zip(keys, draws)):
        gen.manual_seed(pair_seed(seed, salt, k, j))
        sample(tuple(shape), generator=gen, out=out[r])
    return out


def channel_scale(std: torch.Tensor, value: float, space: str) -> torch.Tensor:
    """A noise level or budget in pixel units per channel, shape (1, C, 1, 1): ``value`` in
    ``pixel`` space, ``value * std_c`` in ``normalized`` space (``std`` = the model's std)."""
    check_choice("space", space, SPACES)
    return torch.full_like(std, float(value)) if space == "pixel" else float(value) * std
