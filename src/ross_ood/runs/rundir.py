"""The run folder on disk: the one owner of its files.

A finished ``ross eval``, ``attack`` or ``certify`` (or ``ross combine`` of their parts) leaves a
folder holding:

- ``config.yaml``: the settings it ran with;
- ``results.json`` (the results document), ``results.csv`` and ``results.md`` (rendered from it);
- per-input scores for paired comparisons, keyed by ``ScoreKey`` (detector, eps or ``"clean"``,
  side, set, target): ``input_scores.npz`` (float32 where that is exact, else float64; stored runs
  may hold the older ``input_scores.json`` or its gzip'd copy, read alike);
- for certify runs, the per-input certified bounds ``certified_bounds.npz`` (older:
  ``certified_bounds.json``), keyed (detector, sigma, radius or ``"clean"``, set);
- ``scores.npz``: every detector's per-set scores (and the median / spread of smoothed ones).

Every reader and writer of these files is here; everything else calls these functions.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ross_ood.store import atomic_write_bytes, atomic_write_text, read_stored_text

__all__ = ["ScoreKey", "BoundKey", "RUN_ONLY_SETTINGS", "prepare_out", "write_results", "read_results",
           "save_scores", "save_input_scores", "load_input_scores", "save_bounds", "load_bounds", "load_run_scores",
           "with_defaults", "BEFORE_SETTING", "RECORD_FIELDS", "csv_text"]

#: settings that never change a run's numbers: parts of one run may differ in them, and a resumed
#: training run may too (training keeps the ones that are its own hyper-parameters, e.g. batch_size)
RUN_ONLY_SETTINGS = ("out", "part", "progress", "device", "workers", "batch_size", "block_size", "chunk_size",
                     "attack_batch", "data_root", "resume", "stop_after")

#: the columns of results.csv that every record has, in order
RECORD_FIELDS = ["detector", "ood_set", "group", "auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out"]

_SEP = "|"


class ScoreKey(NamedTuple):
    """One per-input score array of a run: ``eps`` is a float (pixel units; an L2 radius for the
    ``certified`` target) or ``"clean"``; ``side`` is ``min`` (ID attacked), ``max`` (OOD attacked)
    or ``"clean"``; ``target`` the attack (``transfer``, ``adaptive``, ``worst``, ...), ``certified``
    or ``"clean"``."""

    detector: str
    eps: float | str
    side: str
    set: str
    target: str

    @classmethod
    def clean(cls, detector: str, set_name: str) -> "ScoreKey":
        return cls(detector, "clean", "clean", set_name, "clean")

    def encode(self) -> str:
        if self.eps == "clean":
            return _SEP.join((self.detector, "clean", self.set))
        return _SEP.join((self.detector, repr(float(self.eps)), self.side, self.set, self.target))

    @classmethod
    def decode(cls, text: str) -> "ScoreKey":
        parts = text.split(_SEP)
        if len(parts) == 3 and parts[1] == "clean":
            return cls.clean(parts[0], parts[2])
        if len(parts) != 5:
            raise ValueError(f"not a per-input score key: {text!r}")
        return cls(parts[0], float(parts[1]), parts[2], parts[3], parts[4])


class BoundKey(NamedTuple):
    """One per-input certified-bound array: (detector, sigma, L2 radius or ``"clean"``, set)."""

    detector: str
    sigma: float
    radius: float | str
    set: str

    def encode(self) -> str:
        rad = "clean" if self.radius == "clean" else repr(float(self.radius))
        return _SEP.join((self.detector, repr(float(self.sigma)), rad, self.set))

    @classmethod
    def decode(cls, text: str) -> "BoundKey":
        det, sig, rad, s = text.split(_SEP)
        return cls(det, float(sig), rad if rad == "clean" else float(rad), s)


# ------------------------------------------------------------------ the folder and results.json
def prepare_out(out: str | os.PathLike) -> None:
    """Create the output folder and prove it writable before any computation."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder {str(out)!r}: {e.strerror or e}") from None


def csv_text(rows: list, fields: list | None = None) -> str:
    """Records as CSV (floats with 6 decimals)."""
    import csv
    fields = fields or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_results(out_dir: str | os.PathLike, doc: dict, markdown: str) -> None:
    """``results.json`` (``doc``), ``results.csv`` (records and means) and ``results.md``."""
    out = Path(out_dir)
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, sort_keys=False, default=float) + "\n")
    rows = list(doc.get("results", [])) + list(doc.get("means", []))
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in RECORD_FIELDS]
    atomic_write_text(out / "results.csv", csv_text(rows, RECORD_FIELDS + extra))
    atomic_write_text(out / "results.md", markdown + "\n")


def read_results(run_dir: str | os.PathLike) -> dict:
    """The results document of a finished run (``results.json``); a folder without one is refused by name."""
    res = Path(run_dir) / "results.json"
    if not res.is_file():
        raise FileNotFoundError(f"{run_dir} holds no results.json: not a finished ross eval / attack / certify run")
    return json.loads(res.read_text())


#: settings that entered with a default that changes the numbers, and the value that reproduces
#: what a run written before them did: ``square_queries`` (the gradient-free leg, part of ``worst``
#: since it exists; a run without the setting had no such leg)
BEFORE_SETTING = {"square_queries": 0,  # (square_n then does nothing: its default stands)
                  "precision": "fp32"}  # the attacks ran in float32 before the setting existed


def with_defaults(stored: dict, defaults: dict) -> dict:
    """A stored run's settings (``config.yaml``, ``attack_settings``) with each setting added after
    it was written. A new setting mostly enters with a default that changes no number (its old
    behaviour), so that default is what the run used; the others (``BEFORE_SETTING``) take the
    value of the old behaviour: two runs compare equal setting by setting."""
    return {**defaults, **{k: v for k, v in BEFORE_SETTING.items() if k in defaults}, **stored}


# ------------------------------------------------------------------ arrays
def _save_arrays(path: Path, flat: dict[str, np.ndarray]) -> None:
    """An npz of named 1-d arrays, each as float32 where that round-trips exactly, else float64."""
    out = {}
    for k, v in flat.items():
        v = np.asarray(v, np.float64)
        f32 = v.astype(np.float32)
        exact = np.array_equal(f32.astype(np.float64), v, equal_nan=True)
        out[k] = f32 if exact else v
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    atomic_write_bytes(path, buf.getvalue())


def _load_arrays(stem: Path) -> dict[str, np.ndarray] | None:
    """``STEM.npz``, else ``STEM.json`` (or its ``.json.gz`` stored copy); None when neither is there."""
    npz = stem.with_suffix(".npz")
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            return {k: z[k].astype(np.float64) for k in z.files}
    text = read_stored_text(stem.with_suffix(".json"))
    if text is None:
        return None
    return {k: np.asarray(v, np.float64) for k, v in json.loads(text).items()}


def save_scores(out: str | os.PathLike, scores: dict) -> None:
    """Per-detector per-set scores (and median / D of smoothed ones): ``scores.npz``, keyed ``DET|SET|FIELD``."""
    flat = {f"{det}|{s}|{k}": v for det, per in scores.items() for s, d in per.items() for k, v in d.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    atomic_write_bytes(Path(out) / "scores.npz", buf.getvalue())


def save_input_scores(out: str | os.PathLike, clean_scores: dict, attacked: dict | None = None) -> None:
    """Per-input scores for paired comparisons (``ross compare``): ``input_scores.npz``.
    ``clean_scores``: {detector: {set: {"score": array}}}; ``attacked``: {ScoreKey-like tuple: array}."""
    flat = {ScoreKey.clean(det, s).encode(): v["score"] for det, per in clean_scores.items() for s, v in per.items()}
    flat.update({ScoreKey(*k).encode(): v for k, v in (attacked or {}).items()})
    _save_arrays(Path(out) / "input_scores.npz", flat)


def load_input_scores(run_dir: str | os.PathLike) -> dict[ScoreKey, np.ndarray]:
    """The inverse of ``save_input_scores``."""
    flat = _load_arrays(Path(run_dir) / "input_scores")
    if flat is None:
        raise FileNotFoundError(f"{run_dir} holds no per-input scores (input_scores.npz); re-run it with this "
                                "version of ross-ood")
    return {ScoreKey.decode(k): v for k, v in flat.items()}


def save_bounds(out: str | os.PathLike, bounds: dict) -> None:
    """Per-input certified bounds ``{(detector, sigma, radius or "clean", set): array}`` as
    ``certified_bounds.npz`` (abstentions are -inf / +inf)."""
    _save_arrays(Path(out) / "certified_bounds.npz", {BoundKey(*k).encode(): v for k, v in bounds.items()})


def load_bounds(run_dir: str | os.PathLike) -> dict[BoundKey, np.ndarray]:
    """The inverse of ``save_bounds``."""
    flat = _load_arrays(Path(run_dir) / "certified_bounds")
    if flat is None:
        raise FileNotFoundError(f"{run_dir} holds no per-input certified bounds (certified_bounds.npz); re-run it "
                                "with this version of ross-ood")
    return {BoundKey.decode(k): v for k, v in flat.items()}


def _certified_scores(run_dir) -> dict[ScoreKey, np.ndarray]:
    """A certify run's per-input numbers as score keys: the clean smoothed scores, and per radius
    the ID lower bounds (side ``min``) and OOD upper bounds (side ``max``), target ``certified``,
    abstentions replaced by values ranked worst (``certify.rank_abstentions``, the ranking of the
    run's own certified metrics)."""
    from ross_ood.certify import rank_abstentions
    bounds = load_bounds(run_dir)
    sigmas = {k.sigma for k in bounds}
    grouped: dict = {}
    for k, v in bounds.items():
        name = k.detector if len(sigmas) == 1 else f"{k.detector}@{k.sigma:g}"
        grouped.setdefault((name, k.radius), {})[k.set] = v
    out = {}
    for (name, radius), sets in grouped.items():
        if radius == "clean":
            out.update({ScoreKey.clean(name, s): v for s, v in sets.items()})
            continue
        id_lo, ood_hi = rank_abstentions(sets["id_test"], {s: v for s, v in sets.items() if s != "id_test"})
        out[ScoreKey(name, radius, "min", "id_test", "certified")] = id_lo
        out.update({ScoreKey(name, radius, "max", s, "certified"): v for s, v in ood_hi.items()})
    return out


def load_run_scores(run_dir) -> tuple[dict, dict[ScoreKey, np.ndarray]]:
    """(results document, per-input scores) of an eval, attack or certify run folder. Eval runs
    give their clean scores, attack runs clean and attacked ones, certify runs their bounds per
    radius (target ``certified``)."""
    doc = read_results(run_dir)
    if doc.get("command") == "certify":
        return doc, _certified_scores(run_dir)
    if doc.get("command") not in ("eval", "attack"):
        raise ValueError(f"{run_dir} holds ross {doc.get('command')} results: only eval, attack and certify runs "
                         "store per-input numbers, so only they can be compared")
    return doc, load_input_scores(run_dir)
