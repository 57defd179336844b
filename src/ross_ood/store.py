"""Results store: atomic file writes, content keys, cached per-block arrays, sharding.

Every long computation is split into *blocks* of consecutive images of one data set. A
block's arrays are cached under a key that hashes everything that determines them, so an
interrupted run resumes without redoing finished blocks and a finished run re-run is
instant. Under ``torchrun`` the blocks of every set are dealt round-robin to the
processes; since the noise depends only on (seed, image) and the blocks are the same for
any number of processes, the gathered arrays equal a one-process run's.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "read_stored_text", "stable_key", "BlockCache", "shard_blocks", "dist_info",
           "gather_objects", "gather_blocks", "concat_blocks"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/ross-ood`` (default ``~/.cache/ross-ood``), joined with ``parts``: the one
    place where ross-ood keeps what it can recompute (feature statistics, measured speeds, data
    too large for the data root)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "ross-ood", *parts)


def read_stored_text(path: str | os.PathLike) -> str | None:
    """The text of ``path``, or of ``path.gz`` where only the gzip'd copy exists (stored runs keep
    large per-input files gzip'd: ``scripts/store_run.sh``); None when neither exists."""
    path = Path(path)
    if path.is_file():
        return path.read_text()
    gz = Path(f"{path}.gz")
    if gz.is_file():
        import gzip
        return gzip.decompress(gz.read_bytes()).decode()
    return None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return hashlib.sha256(obj.detach().cpu().numpy().tobytes()).hexdigest()
    return obj


def stable_key(obj, length: int = 16) -> str:
    """A hex digest of a JSON-able description (arrays enter by their bytes' hash)."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class BlockCache:
    """``root/<set>/<unit>/<key>.npz`` files holding the arrays of one block."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = None if root is None else Path(root)

    def path(self, set_name: str, unit: str, key: str) -> Path | None:
        if self.root is None:
            return None
        safe = lambda s: "".join(c if c.isalnum() or c in "-_.=" else "_" for c in s)  # noqa: E731
        return self.root / safe(set_name) / safe(unit) / f"{key}.npz"

    def load(self, set_name: str, unit: str, key: str) -> dict[str, np.ndarray] | None:
        p = self.path(set_name, unit, key)
        if p is None or not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            return None  # a damaged or half-written cache file is recomputed, not trusted

    def save(self, set_name: str, unit: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        p = self.path(set_name, unit, key)
        if p is None:
            return
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(p, buf.getvalue())


def shard_blocks(n_items: int, block_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """The ``(start, stop)`` blocks of ``range(n_items)`` that process ``rank`` of ``world``
    computes: blocks of ``block_size`` dealt round-robin. Together the ranks cover every
    item exactly once."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} out of range for world size {world}")
    blocks = [(s, min(s + block_size, n_items)) for s in range(0, n_items, block_size)]
    return blocks[rank::world]


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group, or (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_objects(obj):
    """Every rank's ``obj`` as a list (rank order); ``[obj]`` when not distributed."""
    rank, world = dist_info()
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def gather_blocks(mine: dict, n_items: int, what: str) -> list:
    """Every rank's ``{(start, stop): arrays}`` gathered, as the list of block values in
    order; an error if the blocks do not cover the ``n_items`` items of ``what``."""
    blocks: dict = {}
    for part in gather_objects(mine):
        blocks.update(part)
    order = sorted(blocks)
    if sum(b - a for a, b in order) != n_items:
        raise RuntimeError(f"blocks of {what!r} do not cover its {n_items} images")
    return [blocks[b] for b in order]


def concat_blocks(parts: list) -> dict:
    """Concatenate a list of ``{name: array}`` block results along the first axis."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
