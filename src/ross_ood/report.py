"""Result files and tables: results.json / results.csv / results.md, printed tables.

Metrics are stored as fractions in [0, 1] and shown in percent with two decimals.
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
from pathlib import Path

from .store import atomic_write_text

__all__ = ["versions", "write_results", "markdown_table", "csv_text", "RECORD_FIELDS", "pct", "cell"]

RECORD_FIELDS = ["detector", "ood_set", "group", "auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out"]


def versions() -> dict:
    import numpy
    import sklearn
    import torch

    from . import __version__
    return {"ross_ood": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit_learn": sklearn.__version__, "python": platform.python_version()}


def pct(v, std=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    s = f"{100 * v:.2f}"
    return s if std is None else f"{s}±{100 * std:.2f}"


def cell(rec: dict) -> str:
    """``FPR@95 / AUROC`` in percent (with ± std where the record has ``*_std``)."""
    return f"{pct(rec['fpr95'], rec.get('fpr95_std'))} / {pct(rec['auroc'], rec.get('auroc_std'))}"


def markdown_table(records: list, means: list, row_key: str = "detector", col_key: str = "ood_set",
                   title: str | None = None) -> str:
    """Rows = detectors, columns = OOD sets then means; cells FPR@95 / AUROC (%)."""
    allrec = list(records) + list(means)
    rows = list(dict.fromkeys(r[row_key] for r in allrec))
    cols = list(dict.fromkeys(r[col_key] for r in records)) + list(dict.fromkeys(r[col_key] for r in means))
    idx = {(r[row_key], r[col_key]): r for r in allrec}
    lines = []
    if title:
        lines += [title, ""]
    lines.append("| " + row_key + " | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for row in rows:
        cells = [cell(idx[(row, c)]) if (row, c) in idx else "" for c in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: FPR@95 / AUROC in percent (FPR@95: share of ID flagged OOD when 95% of OOD is caught; "
                 "OOD is the positive class, OpenOOD v1.5 conventions).")
    return "\n".join(lines)


def csv_text(rows: list, fields: list | None = None) -> str:
    fields = fields or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_results(out_dir: str | Path, doc: dict, markdown: str) -> None:
    """``results.json`` (``doc``), ``results.csv`` (records and means) and ``results.md``."""
    out = Path(out_dir)
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, sort_keys=False, default=float) + "\n")
    rows = list(doc.get("results", [])) + list(doc.get("means", []))
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in RECORD_FIELDS]
    atomic_write_text(out / "results.csv", csv_text(rows, RECORD_FIELDS + extra))
    atomic_write_text(out / "results.md", markdown + "\n")
