"""User plugins: modules or files that the user named (``--plugin``, or ``plugin:`` in a config
file), imported before the settings are checked, so that what they register (``ross_ood.register_score``)
is known to ``eval``, ``attack``, ``certify`` and ``sweep``. A plugin is code the user chose to
run: it is imported only when named, never found by scanning."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

__all__ = ["load_plugin", "load_plugins"]

_LOADED: dict[str, object] = {}


def load_plugin(spec: str):
    """Import ``spec``: a path to a ``.py`` file, or a module name on ``sys.path``. A file is
    imported once per resolved path; an error names the plugin."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"plugin must name a module or a .py file, got {spec!r}")
    spec = spec.strip()
    p = Path(spec)
    key = str(p.resolve()) if spec.endswith(".py") else spec
    if key in _LOADED:
        return _LOADED[key]
    try:
        if spec.endswith(".py"):
            if not p.is_file():
                raise FileNotFoundError(f"plugin file {spec} not found")
            name = f"ross_plugin_{p.stem}_{abs(hash(key)) % 10**8}"
            mod_spec = importlib.util.spec_from_file_location(name, p)
            mod = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = mod
            mod_spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(spec)
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ValueError(f"plugin {spec!r}: {e}") from None
    except Exception as e:  # the user's code failed: say which plugin
        raise ValueError(f"plugin {spec!r} failed to import: {type(e).__name__}: {e}") from None
    _LOADED[key] = mod
    return mod


def load_plugins(specs) -> None:
    for s in specs or []:
        load_plugin(s)
