"""Progress bars, one kind for the command line and the API.

``bars(enabled)`` is a maker of tqdm bars on stderr (``make(name, total)``, each showing the rate
and the estimated time left) or None for none: ``enabled=None`` (the API's default) shows them
only when stderr is a terminal, ``True`` always (the command line's ``--progress``), ``False``
never; ranks other than 0 of a torchrun job never show them. ``with progress(make, name, total)
as update: ... update(n)`` runs a block with one bar (``update`` is None without a maker), closed
however the block ends."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["bars", "progress", "count_images"]


def bars(enabled: bool | None = None):
    """A maker of progress bars ``make(name, total)``, or None (see the module doc)."""
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    from ross_ood.store import dist_info
    if dist_info()[0] != 0:
        return None
    from tqdm import tqdm

    def make(name, total):
        return tqdm(total=total, desc=f"{name:>14}", unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)
    return make


@contextmanager
def progress(make, name: str, total: int | None) -> Iterator[Callable[[int], object] | None]:
    bar = make(name, total) if make else None
    try:
        yield bar.update if bar else None
    finally:
        if bar:
            bar.close()


def count_images(data) -> int | None:
    """How many images ``data`` holds, where that is known without reading it: a tensor's first
    dimension, a DataLoader's dataset length; None otherwise (the bar then counts without a total)."""
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) == 4:
        return int(shape[0])
    dataset = getattr(data, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None
