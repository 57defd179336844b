"""User plugins: modules or files that the user named (``--plugin``, or ``plugin:`` in a config
file), imported before the settings are checked, so that what they register (``ross_ood.register_score``)
is known to ``eval``, ``attack``, ``certify`` and ``sweep``. A plugin is code the user chose to
run: it is imported only when named, never found by scanning."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

__all__ = ["load_plugin", "load_plugins", "factory_model", "read_zoo"]

_LOADED: dict[str, object] = {}


def load_plugin(spec: str, what: str = "plugin"):
    """Import ``spec``: a path to a ``.py`` file, or a module name on ``sys.path``. A file is
    imported once per resolved path; an error names it as ``what`` (a plugin, a model's file)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{what} must name a module or a .py file, got {spec!r}")
    spec = spec.strip()
    p = Path(spec)
    key = str(p.resolve()) if spec.endswith(".py") else spec
    if key in _LOADED:
        return _LOADED[key]
    try:
        if spec.endswith(".py"):
            if not p.is_file():
                raise FileNotFoundError(f"file {spec} not found")
            name = f"ross_plugin_{p.stem}_{abs(hash(key)) % 10**8}"
            mod_spec = importlib.util.spec_from_file_location(name, p)
            mod = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = mod
            mod_spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(spec)
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ValueError(f"{what} {spec!r}: {e}") from None
    except Exception as e:  # the user's code failed: say whose
        raise ValueError(f"{what} {spec!r} failed to import: {type(e).__name__}: {e}") from None
    _LOADED[key] = mod
    return mod


def load_plugins(specs) -> None:
    for s in specs or []:
        load_plugin(s)


def factory_model(spec: str, checkpoint=None, device="cpu"):
    """A user's model from ``MODULE:FACTORY`` or ``FILE.py:FACTORY`` (``--model``): the factory,
    called without arguments, returns ``(net, mean, std)``, ``(net, mean, std, input_size)``, a dict
    with those keys, or a wrapped model (``ross_ood.wrap``). ``checkpoint``: a state dict (or
    ``{"state_dict": ...}``) loaded safely (``weights_only``) into the network, refused by name
    when it does not match. Whatever is wrong with the factory or its network (a required argument,
    another return value, a network whose forward does not return logits) is one ValueError that
    names ``spec``; the network is tried on one blank image before any work."""
    import inspect

    import torch

    from ross_ood.model import ModelWrapper, wrap
    from ross_ood.models import load_checkpoint, load_state
    where, _, fn = spec.rpartition(":")
    if not where or not fn:
        raise ValueError(f"model {spec!r}: give MODULE:FACTORY or FILE.py:FACTORY")
    factory = getattr(load_plugin(where, what=f"model {spec!r}: its module"), fn, None)
    if not callable(factory):
        raise ValueError(f"model {spec!r}: {where} has no function {fn!r}")
    try:
        required = [p.name for p in inspect.signature(factory).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):  # a builtin without a signature: just call it
        required = []
    if required:
        raise ValueError(f"model {spec!r}: {fn}() takes required arguments ({', '.join(required)}), and ross calls "
                         "the factory without any: give them defaults, or add a factory of no arguments that calls it")
    try:
        made = factory()
    except Exception as e:  # the user's code failed: say whose
        raise ValueError(f"model {spec!r}: {fn}() failed: {type(e).__name__}: {e}") from None
    if isinstance(made, dict):
        made = (made.get("net"), made.get("mean"), made.get("std"), made.get("input_size"))
    if isinstance(made, ModelWrapper):
        model = made
    elif isinstance(made, tuple) and len(made) in (3, 4):
        try:
            model = wrap(made[0], made[1], made[2], input_size=made[3] if len(made) == 4 else None)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model {spec!r}: {e}") from None
    else:
        got = f"a tuple of {len(made)}" if isinstance(made, tuple) else f"a {type(made).__name__}"
        raise ValueError(f"model {spec!r}: {fn}() returned {got}; return (net, mean, std[, input_size]), a dict with "
                         "those keys, or ross_ood.wrap(net, mean, std)")
    if checkpoint is not None:
        load_state(model.net, load_checkpoint(checkpoint), source=str(checkpoint))
    model = model.to(device).eval()
    size = model.input_size or 32
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.channels, size, size, device=model.device))
    except (TypeError, ValueError, RuntimeError) as e:
        other_size = isinstance(e, RuntimeError) and not model.input_size
        raise ValueError(f"model {spec!r}: on one blank {model.channels}x{size}x{size} image: {e}"
                         + (" (a network for other image sizes: return input_size too)" if other_size else "")
                         ) from None
    if checkpoint is None:
        import warnings
        warnings.warn(f"model {spec!r}: no checkpoint given, so the network keeps the weights {fn}() gave it "
                      "(untrained unless the factory loads them): pass --checkpoint FILE", stacklevel=2)
    return model


def read_zoo(path) -> dict:
    """A zoo of one's own (``--zoo FILE.yaml``): ``NAME: {model: FILE.py:FACTORY or MODULE:FACTORY,
    checkpoint: PATH}``, read with ``yaml.safe_load``; relative paths are relative to the file.
    Returns {name: (model spec, checkpoint or None)}; a malformed entry is refused by name."""
    from ross_ood.validate import read_yaml_mapping
    p = Path(path)
    doc = read_yaml_mapping(p, "zoo", "a mapping NAME: {model: FILE.py:FACTORY, checkpoint: PATH}")
    out = {}
    for name, entry in doc.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or ":" not in entry["model"]:
            raise ValueError(f"zoo {path}: entry {name!r} needs model: FILE.py:FACTORY or MODULE:FACTORY")
        unknown = sorted(set(entry) - {"model", "checkpoint", "note"})
        if unknown:
            raise ValueError(f"zoo {path}: entry {name!r} has unknown keys {unknown}")
        where, _, fn = entry["model"].rpartition(":")
        if where.endswith(".py") and not Path(where).is_absolute():
            where = str(p.parent / where)
        ckpt = entry.get("checkpoint")
        if ckpt is not None and not Path(ckpt).is_absolute():
            ckpt = str(p.parent / ckpt)
        out[str(name)] = (f"{where}:{fn}", ckpt)
    return out
