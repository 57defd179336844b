"""Run settings: defaults per command, YAML config files, command-line overrides.

Settings come from, in increasing priority: built-in defaults, a YAML config file
(``--config``, read with ``yaml.safe_load``; an unknown key or a value of the wrong type is
an error that names it), and the flags given on the command line.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["EVAL_DEFAULTS", "ATTACK_DEFAULTS", "CERTIFY_DEFAULTS", "SWEEP_DEFAULTS", "DEFAULT_DETECTORS",
           "load_config_file", "resolve_config",
           "parse_lam"]

DEFAULT_DETECTORS = "msp,energy,gen,odin,fdbd,pro-fdbd,ross-msp,ross-fdbd"

EVAL_DEFAULTS = {
    "benchmark": "cifar10", "model": None, "checkpoint": None, "data_root": None,
    "detectors": DEFAULT_DETECTORS, "limit": None, "seed": 0, "split_seed": 0, "out": "runs/eval",
    "n_samples": 25, "sigma": 0.05, "lam": "0.01", "noise_space": "pixel", "batch_size": 128,
    "chunk_size": 128, "block_size": 512, "device": "auto", "noise_device": "cpu", "ood": [], "only_extra": False,
    "workers": 0,
    "progress": True,
}


ATTACK_DEFAULTS = {
    **EVAL_DEFAULTS, "out": "runs/attack",
    "detectors": "msp,energy,gen,odin,fdbd,pro-fdbd,ross-msp,ross-energy,ross-gen,ross-fdbd",
    "eps": "2,4,8,16", "eps_space": "pixel", "objective": "min,max", "target": "transfer,adaptive,worst",
    "transfer_steps": 40, "adaptive_steps": 40, "restarts": 2, "eot": 1, "attack_n": 8,
    "surrogates": "median,mean,ross", "attack_batch": 64,
}


def parse_lam(v) -> float | dict:
    if isinstance(v, (int, float)):
        return float(v)
    v = str(v)
    if "=" not in v:
        return float(v)
    out = {}
    for part in v.split(","):
        k, _, val = part.partition("=")
        out[k.strip()] = float(val)
    return out


# the types of the settings whose default is None
_NONE_DEFAULT_TYPES = {"limit": 1, "model": "", "checkpoint": "", "data_root": ""}


def _check_value(key: str, value, default):
    """Type-check a config value against its default's type; a clear error otherwise."""
    if default is None:
        default = _NONE_DEFAULT_TYPES.get(key)
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, list):
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"config key {key!r} must be a list, got {value!r}")
        return value
    if isinstance(default, str):
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        if isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    return value


def load_config_file(path: str | os.PathLike, defaults: dict) -> dict:
    import yaml
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {p} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"config file {p} must hold a mapping of settings, got {type(doc).__name__}")
    out = {}
    for k, v in doc.items():
        key = str(k).replace("-", "_")
        if key not in defaults:
            raise ValueError(f"unknown config key {k!r} in {p}; known keys: {', '.join(sorted(defaults))}")
        out[key] = _check_value(key, v, defaults[key])
    return out


def resolve_config(defaults: dict, args: argparse.Namespace) -> dict:
    """defaults < --config file < flags given on the command line."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func")}
    cfg = dict(defaults)
    if getattr(args, "config", None):
        cfg.update(load_config_file(args.config, defaults))
    cfg.update(given)
    return cfg

CERTIFY_DEFAULTS = {
    **EVAL_DEFAULTS, "out": "runs/certify", "detectors": "median-fdbd,ross-fdbd,median-msp,ross-msp",
    "sigmas": "0.12,0.25", "models": "", "n_cert": 1000, "alpha": 0.001, "radii": "0,0.05,0.1,0.2,0.3,0.5",
    "grid": 200,
}

SWEEP_DEFAULTS = {
    **EVAL_DEFAULTS, "out": "runs/sweep", "detectors": "ross-fdbd,ross-msp", "params": "lam,n_samples,sigma",
    "lams": "0.005,0.01,0.02,0.05", "ns": "5,10,25,50,100", "sweep_sigmas": "0.025,0.05,0.1,0.25",
    "attack_eps": "8", "eps_space": "normalized", "objective": "min,max", "transfer_steps": 40, "attack_batch": 64,
}
