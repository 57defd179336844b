"""The tables of results documents: results.md and the printed tables, rendered from
results.json alone, and mean ± std aggregation over runs (the files: ``runs.rundir``).

Metrics are stored as fractions in [0, 1] and shown in percent with two decimals.
"""
from __future__ import annotations

import json
import math
import platform

from ross_ood.attacks import OBJECTIVE_NAMES
from ross_ood.metrics import CI_FIELDS
from ross_ood.precision import cpu_info
from ross_ood.validate import eps_label

__all__ = ["aggregate", "versions", "markdown_table", "RENDERERS", "pct", "cell", "render",
           "attack_table", "certify_table"]



def versions() -> dict:
    import numpy
    import sklearn
    import torch

    from ross_ood._version import __version__
    return {"ross_ood": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit_learn": sklearn.__version__, "python": platform.python_version(), **cpu_info()}


def pct(v, std=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    s = f"{100 * v:.2f}"
    return s if std is None else f"{s}±{100 * std:.2f}"


def _interval(rec: dict, metric: str) -> str:
    lo, hi = rec.get(f"{metric}_lo"), rec.get(f"{metric}_hi")
    return "" if lo is None or hi is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"


def cell(rec: dict) -> str:
    """``FPR@95 / AUROC`` in percent, each with its 95% bootstrap interval where the record
    has one (``[lo, hi]``), or ± std over runs where it has ``*_std``."""
    return (f"{pct(rec['fpr95'], rec.get('fpr95_std'))}{_interval(rec, 'fpr95')} / "
            f"{pct(rec['auroc'], rec.get('auroc_std'))}{_interval(rec, 'auroc')}")


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
                 f"OOD is the positive class, OpenOOD v1.5 conventions). {ci_note(allrec)}")
    return "\n".join(lines)


# ------------------------------------------------------------------ rendering
# The tables of results.md are rendered from results.json alone (render(doc)), by the jobs
# when they finish and by `ross report` later: both give the same bytes.
def _sizes(doc) -> str:
    return ", ".join(f"{k} {v}" for k, v in doc["set_sizes"].items())


def _acc(doc) -> str:
    acc = doc.get("id_accuracy")
    if acc is None or acc != acc:  # a report on unlabelled images
        return "not measured (no labels)"
    return pct(acc, doc.get("id_accuracy_std")) + "%"


def _runs_note(doc) -> str:
    runs = doc.get("runs")
    return f" Mean ± std over {len(runs)} runs ({', '.join(runs)})." if runs else ""


def render_eval(doc: dict) -> str:
    c = doc["config"]
    both = doc.get("id_accuracy_val_and_test")
    title = (f"## {doc['benchmark']} / {doc['model']}: FPR@95 / AUROC (%)\n\n"
             f"ID accuracy {_acc(doc)} on id_test"
             + (f" ({pct(both, doc.get('id_accuracy_val_and_test_std'))}% on id_val + id_test)" if both is not None
                else "")
             + f". Sets: {_sizes(doc)}. Smoothing: N={c['n_samples']}, sigma={c['sigma']} "
             f"({c['noise_space']} space), seed {doc['seed']}. "
             + " ".join(n.rstrip(".") + "." for n in doc.get("notes", [])) + _runs_note(doc))
    return markdown_table(doc["results"], doc["means"], title=title)




def attack_table(clean_means: list, means: list, target: str, eps_list: list, title: str) -> str:
    """Rows = detectors; columns = clean, then eps x {PGD-Min, PGD-Max, PGD-Both} (those run);
    mean over OOD sets."""
    dets = list(dict.fromkeys(r["detector"] for r in clean_means))
    idx = {(r["detector"], r["eps"], r["objective"]): r for r in means if r["target"] == target}
    clean = {r["detector"]: r for r in clean_means}
    objs = [o for o in OBJECTIVE_NAMES if any(r["objective"] == o for r in means)]
    cols = ["clean"] + [f"{eps_label(e)} {OBJECTIVE_NAMES[o]}" for e in eps_list for o in objs]
    lines = [title, "", "| detector | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for d in dets:
        cells = [cell(clean[d])]
        for e in eps_list:
            for o in objs:
                r = idx.get((d, e, o))
                cells.append(cell(r) if r else "")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def precisions_text(per: dict) -> str:
    """{part: precision} as ``bf16 (parts 1/3, 2/3), fp32 (part 3/3)``."""
    by: dict = {}
    for part, p in per.items():
        by.setdefault(p, []).append(part)
    return ", ".join(f"{p} (part{'s' if len(v) > 1 else ''} {', '.join(v)})" for p, v in sorted(by.items()))


def _precision_note(doc: dict) -> str:
    """``; gradient steps in bf16`` (nothing for fp32); a combined run whose parts ran at different
    precisions names them per part."""
    if doc.get("part_precisions"):
        return "; gradient steps in " + precisions_text(doc["part_precisions"])
    p = doc["attack_settings"].get("precision", "fp32")
    return "" if p == "fp32" else f"; gradient steps in {p}"


def render_attack(doc: dict) -> str:
    c, st = doc["config"], doc["attack_settings"]
    space = doc["eps_space"]
    head = (f"ID accuracy {_acc(doc)}. Sets: {_sizes(doc)}. eps in {space} space"
            f"{' (eps*std per channel, no clipping)' if space == 'normalized' else ' (clipped to [0,1])'}; "
            f"smoothing N={c['n_samples']}, sigma={c['sigma']} ({c['noise_space']}). PGD-Min attacks ID test "
            f"inputs, PGD-Max each OOD set, PGD-Both both; cells FPR@95 / AUROC (%), mean over {len(doc['groups'])} OOD sets. "
            f"{ci_note(doc['means'])}"
            + _runs_note(doc))
    desc = {"transfer": f"transfer (paper protocol: {st['transfer_steps']}-step PGD, step eps/30, 1 random start, "
                        "last iterate, on the base score)",
            "adaptive": f"adaptive (APGD {st['adaptive_steps']} steps x {st['adaptive_restarts']} restarts on the "
                        f"detector's own score; smoothed: EOT x{st['eot']} over {st['attack_n']} fresh noisy "
                        f"copies, surrogates {', '.join(st['surrogates'])}"
                        + (f"; EOT-PGD {st['eotpgd_steps']} steps over {st.get('eotpgd_n', st['attack_n'])} copies "
                           f"on {', '.join(st['eotpgd_surrogates'])}" if st.get("eotpgd_steps") else "")
                        + ("; iterates judged on common random numbers" if st.get("judge") else "")
                        + _precision_note(doc)
                        + ")",
            "square": f"square (gradient-free: Square, {st.get('square_queries', 0)} queries per input on the "
                      "detector's own score; smoothed: candidates judged on "
                      f"{st.get('square_n', 8)} noisy copies on common random numbers)",
            "worst": "worst case per input over all attacks and restarts"
                     + (" (gradient legs and the gradient-free leg)" if st.get("square_queries") else "")}
    clean_means = [r for r in doc["clean_means"] if r["ood_set"] == "all-mean"]
    parts = [f"## {doc['benchmark']} / {doc['model']}: robustness", "", head, ""]
    for t in doc["targets"]:
        parts += [attack_table(clean_means, doc["means"], t, doc["eps_list"], f"### target: {desc[t]}"), ""]
    return "\n".join(parts)


def certify_table(records: list, radii: list, title: str) -> str:
    """Rows = detector @ sigma; columns = clean, then each radius; mean over OOD sets."""
    rows = list(dict.fromkeys((r["detector"], r["sigma"]) for r in records))
    idx = {(r["detector"], r["sigma"], r["radius"]): r for r in records if r["ood_set"] == "mean"}
    cols = ["clean"] + [f"eps={r:g}" for r in radii]
    lines = [title, "", "| detector | sigma | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for det, sig in rows:
        cells = [cell(idx[(det, sig, "clean")])] + [cell(idx[(det, sig, r)]) for r in radii]
        lines.append(f"| {det} | {sig:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_certify(doc: dict) -> str:
    c = doc["config"]  # documents written before ross-ood 0.2 name the sample count n_cert
    models_txt = ", ".join(f"sigma {s}: {m}" for s, m in doc["models"].items())
    title = (f"## {doc['benchmark']}: certified FPR@95 / AUROC (%) vs L2 radius eps (pixel space)\n\n"
             f"Worst case over the L2 ball: certified lower bounds of ID scores against certified upper bounds "
             f"of OOD scores (percentile smoothing, n = {c.get('n_cert', c['n_samples'])} noise samples per input, "
             f"failure "
             f"probability alpha = {c['alpha']} per input); 'clean' is the same smoothed detector without an "
             f"adversary. Mean over {doc['n_ood_sets']} OOD sets. Models: {models_txt}. Sets: {_sizes(doc)}. "
             f"{ci_note(doc['means'])}"
             + _runs_note(doc) + _noise_accuracy(doc))
    return certify_table(doc["means"], doc["radii"], title)


def _noise_accuracy(doc: dict) -> str:
    """The classifier's ID test accuracy, clean and under each sigma's noise (one draw per image)."""
    acc = {s: a for s, a in (doc.get("id_accuracy") or {}).items() if isinstance(a, dict) and a.get("n")}
    if not acc:
        return ""
    parts = [f"{100 * a['clean']:.2f}% clean, {100 * a['noisy']:.2f}% under sigma {s} noise" for s, a in acc.items()]
    n = next(iter(acc.values()))["n"]
    return f" Classifier accuracy on the {n} ID test images (one noise draw each): {'; '.join(parts)}."


def render_sweep(doc: dict) -> str:
    parts = [f"## {doc['benchmark']} / {doc['model']}: ablation sweeps", "",
             f"Defaults N={doc['defaults']['n_samples']}, sigma={doc['defaults']['sigma']} "
             f"({doc['config']['noise_space']} space), lambda={doc['defaults']['lam']}. Sets: {_sizes(doc)}. "
             f"Attacked condition: {doc['attack_desc']}. Cells FPR@95 / AUROC (%), mean over "
             f"{len(doc['groups'])} OOD sets. {ci_note(doc['means'])}" + _runs_note(doc), ""]
    for param in doc["params"]:
        rows = [r for r in doc["means"] if r["param"] == param]
        values = list(dict.fromkeys(r[param] for r in rows))
        conds = list(dict.fromkeys(r["condition"] for r in rows))
        dets = list(dict.fromkeys(r["detector"] for r in rows))
        idx = {(r["detector"], r["condition"], r[param]): r for r in rows}
        parts += [f"### {param} sweep", "",
                  "| detector | condition | " + " | ".join(f"{param}={v:g}" for v in values) + " |",
                  "|---" * (len(values) + 2) + "|"]
        for d in dets:
            for cnd in conds:
                parts.append(f"| {d} | {cnd} | " + " | ".join(cell(idx[(d, cnd, v)]) for v in values) + " |")
        parts.append("")
    return "\n".join(parts)


RENDERERS = {"eval": render_eval, "attack": render_attack, "certify": render_certify, "sweep": render_sweep}


def render(doc: dict) -> str:
    """The Markdown tables of a results document (results.json)."""
    kind = doc.get("command")
    if kind not in RENDERERS:
        raise ValueError(f"not a ross-ood results document (command {kind!r})")
    return RENDERERS[kind](doc)


# ------------------------------------------------------------------ aggregation
_KEY_SKIP = set(["auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out", "abstain_id", "abstain_ood"])
_PER_RUN = set(CI_FIELDS)
CI_NOTE = ("[lo, hi]: 95% percentile bootstrap interval over the images (each set resampled; for a mean over "
           "OOD sets, all sets jointly); a difference inside the intervals is not supported.")  # a bootstrap interval belongs to one run: not averaged over runs


def ci_note(records) -> str:
    """``CI_NOTE`` where some record carries an interval (none with ``--bootstrap 0``)."""
    return CI_NOTE if any(r.get("auroc_lo") is not None for r in records) else ""


def _agg_records(lists: list) -> list:
    """Records of several runs -> one record per key, metrics as mean with ``<metric>_std``
    (population std over runs, numpy's default as OpenOOD)."""
    import numpy as np
    groups: dict = {}
    for recs in lists:
        for r in recs:
            key = tuple((k, json.dumps(v, sort_keys=True)) for k, v in r.items() if k not in _KEY_SKIP | _PER_RUN)
            groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        if len(rs) != len(lists):
            raise ValueError("the runs to aggregate do not hold the same records")
        rec = {k: v for k, v in rs[0].items() if k not in _KEY_SKIP | _PER_RUN}
        for k in _KEY_SKIP:
            if k in rs[0]:
                vals = np.array([r[k] for r in rs], float)
                rec[k], rec[f"{k}_std"] = float(vals.mean()), float(vals.std())
        out.append(rec)
    return out


def aggregate(docs: list, names: list) -> dict:
    """One results document from several runs (seeds or checkpoints): every metric as
    mean ± std over the runs; ``runs`` names them."""
    import numpy as np
    if not docs:
        raise ValueError("nothing to aggregate")
    kinds = {d["command"] for d in docs}
    if len(kinds) != 1:
        raise ValueError(f"cannot aggregate different commands {sorted(kinds)}")
    agg = dict(docs[0])
    for k in ("results", "means", "clean", "clean_means"):
        if k in agg:
            agg[k] = _agg_records([d[k] for d in docs])
    for k in ("id_accuracy", "id_accuracy_val_and_test"):
        if k in agg:
            vals = np.array([d[k] for d in docs], float)
            agg[k], agg[f"{k}_std"] = float(vals.mean()), float(vals.std())
    agg["runs"] = list(names)
    agg["seed"] = [d["seed"] for d in docs]
    if "notes" in agg:  # notes shared by every run, then those that differ, per run
        common = [n for n in docs[0]["notes"] if all(n in d.get("notes", []) for d in docs)]
        agg["notes"] = common + [f"{name}: {n}" for name, d in zip(names, docs) for n in d.get("notes", [])
                                 if n not in common]
    agg["wall_time_s"] = float(sum(d.get("wall_time_s", 0.0) for d in docs))
    return agg


# ------------------------------------------------------------------ report
