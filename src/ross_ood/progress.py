"""One progress helper: ``with progress(make, name, total) as update: ... update(n)``.

``make`` is a maker of bars (``make(name, total)`` returning an object with ``update`` and
``close``, e.g. ``cli.runtime.progress_factory``'s tqdm bars) or None for none; the bar is closed
however the block ends."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["progress"]


@contextmanager
def progress(make, name: str, total: int) -> Iterator[Callable[[int], object] | None]:
    bar = make(name, total) if make else None
    try:
        yield bar.update if bar else None
    finally:
        if bar:
            bar.close()
