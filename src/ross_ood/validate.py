"""The one set of parameter validators, shared by the API (detectors, attacks, certificates)
and the command line's typed settings, so that both refuse exactly the same values.

Each returns the value in its canonical type or raises ValueError naming the parameter, the
value and what would be right.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["SPACES", "NOISE_DEVICES", "check_int", "check_number", "check_fraction", "check_choice",
           "split_list"]

#: where sigma and eps are measured: pixel units ([0, 1], clipped) or normalised units (x std_c, unclipped)
SPACES = ("pixel", "normalized")
#: where smoothing noise is drawn: on the CPU (same noise on every device) or the model's device
NOISE_DEVICES = ("cpu", "model")


def check_int(name: str, value, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number >= ``minimum`` (> when ``strict``); NaN and Inf are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if v < minimum or (strict and v == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return v


def check_fraction(name: str, value) -> float:
    """A number strictly between 0 and 1 (a quantile, a rate, a failure probability)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def split_list(value) -> list[str]:
    """'a, b,c' or ['a', 'b'] -> ['a', 'b', 'c'] (empty items dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]
