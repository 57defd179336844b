"""The one set of parameter validators, shared by the API (detectors, attacks, certificates)
and the command line's typed settings, so that both refuse exactly the same values.

Each returns the value in its canonical type or raises ValueError naming the parameter, the
value and what would be right.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

__all__ = ["ContractError", "SPACES", "NOISE_DEVICES", "check_int", "check_number", "check_fraction", "check_choice",
           "split_list", "parse_eps", "parse_part", "eps_label", "read_yaml_mapping", "check_eps", "parse_lam", "check_device", "check_out_dir", "check_ood_names",
           "check_certify_args", "check_ross_noise"]


class ContractError(TypeError):
    """Code of the user's (a score, a detector object, a model factory) broke the contract that
    ross-ood documents for it: the message names the object and what it must do. A TypeError, so
    that the API raises what Python would; the command line answers it in one line (exit 2)."""

#: where sigma and eps are measured: pixel units ([0, 1], clipped) or normalised units (x std_c, unclipped)
SPACES = ("pixel", "normalized")
#: where smoothing noise is drawn: on the CPU (same noise on every device) or the model's device
NOISE_DEVICES = ("cpu", "model")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


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


def check_certify_args(radius, alpha, grid) -> tuple[float, float, int]:
    """A certificate's radius (a finite number >= 0, L2 pixel units), failure probability alpha
    (in (0, 1)) and percentile grid (an integer >= 1): the API's and the CLI's one check."""
    return check_number("radius", radius), check_fraction("alpha", alpha), check_int("grid", grid)


def check_ross_noise(n_samples: int, sigma: float) -> None:
    """ROSS's gate divides by the spread D of the noisy scores: with one copy, or no noise, D is
    always 0 and every score above tau is multiplied by about lam / 1e-12."""
    if n_samples < 2:
        raise ValueError(f"ROSS needs n_samples >= 2, got {n_samples}: with one noisy copy the spread D is always "
                         "0 and the gate divides by 1e-12 (use median smoothing for N = 1)")
    if not sigma > 0:
        raise ValueError(f"ROSS needs sigma > 0, got {sigma}: without noise the copies are equal, the spread D is "
                         "always 0 and the gate divides by 1e-12")


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def split_list(value) -> list[str]:
    """'a, b,c' or ['a', 'b'] -> ['a', 'b', 'c'] (empty items dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def eps_label(eps: float) -> str:
    """An L-inf budget in pixel units as the tables write it: ``8/255`` (at most two decimals)."""
    return f"{round(eps * 255, 2):g}/255"


def check_eps(eps, strict: bool = False) -> float:
    """An L-inf budget as a fraction of the pixel range (8/255 = 0.0314): finite, >= 0 (> 0 with
    ``strict``) and at most 1."""
    check_number("eps", eps, strict=strict)
    if eps > 1:
        raise ValueError(f"eps {eps:g} is beyond the pixel range: give the budget as a fraction of it "
                         f"(8/255 = {8 / 255:.4f}), at most 1")
    return float(eps)


def parse_part(part: str | None) -> tuple[int, int] | None:
    """'K/M' -> (K, M) with 1 <= K <= M; None for no split."""
    if part is None:
        return None
    k, sep, m = str(part).partition("/")
    try:
        k_i, m_i = int(k), int(m)
    except ValueError:
        k_i = m_i = 0
    if not sep or not 1 <= k_i <= m_i or m_i < 2:
        raise ValueError(f"part must be K/M with 1 <= K <= M and M >= 2 (the K-th of M disjoint parts), got {part!r}")
    return k_i, m_i


def parse_eps(values, strict: bool = False) -> list[float]:
    """['2', '8/255', '0.03/1'] -> fractions of the pixel range; bare numbers are in 1/255. With
    ``strict`` (attack budgets) every budget is > 0, and a bare number below 1 (0.03: a fraction,
    as the API takes, given where 1/255 units are read) gets a warning that says how it was read."""
    import warnings
    out = []
    for part in split_list(values):
        num, _, den = part.partition("/")
        try:
            val = float(num) / (float(den) if den else 255.0)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps {part!r} is not a number (give e.g. 8 or 8/255)") from None
        check_number("eps", val)
        if strict and val == 0:
            raise ValueError(f"eps {part!r} is 0: an attack needs a budget > 0 (e.g. 2 or 8, in 1/255 units)")
        if strict and not den and 0 < float(num) < 1:
            warnings.warn(f"eps {part} is read in 1/255 units ({part}/255 = {val:.3g} of the pixel range); for "
                          f"{part} of the pixel range give {float(num) * 255:g} or {part}/1", stacklevel=2)
        if val > 1.0:
            raise ValueError(f"eps {part!r} is {val * 255:g}/255, beyond the pixel range: an L-inf budget is at most "
                             "255/255 (bare numbers are in 1/255 units)")
        out.append(val)
    return out


def parse_lam(value, bases: set[str] | None = None) -> float | dict[str, float]:
    """'0.01' -> 0.01; 'fdbd=0.01,msp=0.002' -> {base: lam}. Every lam must be a finite
    number >= 0 (the API's check); with ``bases`` every key must name one of them."""
    text = str(value)
    if "=" not in text:
        try:
            return check_number("lam", float(text))
        except ValueError:
            raise ValueError(f"lam must be a finite number >= 0, got {text!r}") from None
    out = {}
    for part in split_list(text):
        k, _, v = part.partition("=")
        k = k.strip().lower()
        try:
            out[k] = check_number(f"lam for {k}", float(v))
        except ValueError:
            raise ValueError(f"lam for {k!r} must be a finite number >= 0, got {v!r}") from None
    unknown = sorted(set(out) - (bases | {"default"})) if bases is not None else []
    if unknown:
        raise ValueError(f"lam sets {', '.join(unknown)}, which match no ross detector of this run "
                         f"(their base scores: {', '.join(sorted(bases)) or 'none'})")
    return out


def check_device(device: str) -> str:
    import torch
    if device == "auto":
        return device
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (give auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {device!r} (give auto, cpu, cuda or cuda:N)")
    return device


def check_out_dir(out: str) -> None:
    """The output folder must be creatable: not empty, not a file, not under a file."""
    if not str(out).strip():
        raise ValueError("out must name an output folder, got an empty string")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ValueError(f"out {out!r} is an existing file, not a folder")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"out {out!r} lies under {str(parent)!r}, which is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"out {out!r}: cannot create folders in {str(parent)!r} (not writable)")
            break


def check_ood_names(items: list[str], taken: set[str], owner: str = "the benchmark") -> dict[str, str]:
    """``['NAME=PATH', ...]`` -> {NAME: PATH}; names must be unique, file-name safe (no
    '.', '..', '/') and not among ``taken`` (the benchmark's sets)."""
    out: dict[str, str] = {}
    for it in items:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--ood expects NAME=PATH, got {it!r}")
        if not _NAME.match(name):
            raise ValueError(f"--ood name {name!r} must start with a letter or digit and hold only letters, digits, "
                             "'-', '_', '.', '='")
        if name in out:
            raise ValueError(f"--ood name {name!r} is given twice")
        if name in taken:
            raise ValueError(f"--ood name {name!r} is already a set of {owner} (or reserved); "
                             "choose another name, or pass --only-extra")
        out[name] = path
    return out


def read_yaml_mapping(path, what: str, expected: str) -> dict:
    """A non-empty YAML mapping from ``path`` (``yaml.safe_load``); an unreadable file or another
    shape is refused naming ``what`` and the ``expected`` form."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{what} {path}: cannot read it ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not doc:
        raise ValueError(f"{what} {path}: expected {expected}")
    return doc
