"""Subpackages handed out on first use (PEP 562): ``ross_ood.engine.report`` after ``import ross_ood``
works as it would if everything were imported eagerly, without paying for what is never used."""
from __future__ import annotations

import importlib

__all__ = ["submodules"]


def submodules(package: str):
    """A module ``__getattr__`` for ``package`` that imports ``package.NAME`` when ``NAME`` is asked
    for and is a submodule; any other name is an AttributeError, as for a plain module."""
    def __getattr__(name: str):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    return __getattr__
