"""Paired comparisons of stored runs (``ross compare``): two detectors, or two attacks, on the
same images, as AUROC differences with paired bootstrap intervals.

Two rows evaluated on the same images share most of their sampling noise: which images were
drawn. Resampling the images once and applying the draw to both rows
(``metrics.paired_auroc_difference``) keeps only the noise of the difference, an interval many
times narrower than the two separate ones. Two runs pair on the OOD sets both hold (one may
attack a subset of the sets); runs on other images are refused (their set fingerprints differ):
such a difference has no paired interval.

Certify runs pair with certify runs: per L2 radius, A - B of the certified AUROC (each input's
certified ID lower / OOD upper bound, abstentions ranked worst as in the run's own table), target
``certified``, objective ``both``; detectors of a run with several sigma are named ``DET@SIGMA``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ross_ood.metrics import paired_auroc_difference
from ross_ood.runs.rundir import load_run_scores
from ross_ood.runs.tables import pct
from ross_ood.validate import eps_label

__all__ = ["load_run_scores", "shared_images", "compare_runs", "render_comparison", "budget_label"]


def shared_images(doc_a: dict, doc_b: dict, dir_a, dir_b) -> list[str]:
    """The OOD sets on which two runs' results documents pair: the same ID test images and, per
    OOD set both hold, the same images (a run may attack a subset of the sets, e.g. one arm of a
    cost measurement); runs on other images are refused by name."""
    fa, fb = doc_a.get("set_fingerprints"), doc_b.get("set_fingerprints")
    ood_sets = [s for s in doc_a.get("set_sizes", {}) if s not in ("id_val", "id_test")]
    if isinstance(fa, dict) and isinstance(fb, dict):
        shared = [s for s in ood_sets if s in fb]
        same = fa.get("id_test") == fb.get("id_test") and shared and all(fa.get(s) == fb.get(s) for s in shared)
    else:  # combined runs hold one fingerprint list per piece: all of it must agree
        shared, same = ood_sets, fa is not None and fa == fb
    if not same:
        raise ValueError(f"{dir_a} and {dir_b} were not run on the same images (their set fingerprints differ, "
                         "are missing or share no OOD set): a paired comparison needs the same images")
    return shared


def _pairs(scores: dict, det: str, eps, objective: str, target: str, ood_sets: list[str]):
    """(id scores, {set: scores}) of one objective, or None when the run lacks it."""
    def get(side, s):
        if eps == "clean" or side not in (("min",) if objective == "min" else ("max",) if objective == "max"
                                          else ("min", "max")):
            return scores.get((det, "clean", "clean", s, "clean"))
        return scores.get((det, eps, side, s, target))
    id_s = get("min", "id_test")
    ood = {s: get("max", s) for s in ood_sets}
    if id_s is None or any(v is None for v in ood.values()):
        return None
    return id_s, ood


def compare_runs(dir_a, dir_b=None, det_a: str | None = None, det_b: str | None = None,
                 n_resamples: int = 1000, seed: int = 0) -> dict:
    """A - B for every (eps, objective, target) both runs hold, per detector pair: the same
    detector in two runs, or two detectors (``det_a``, ``det_b``) of one run or of two."""
    from ross_ood.validate import check_int
    n_resamples = check_int("bootstrap", n_resamples)
    for d in (dir_a, dir_b):
        if d is not None and not (Path(d) / "results.json").is_file():
            raise FileNotFoundError(f"{d} holds no results.json: not a finished ross eval / attack / certify run"
                                    + ("" if Path(d).is_dir() else " (no such folder)"))
    if dir_b is None and (det_a is None or det_b is None or det_a == det_b):
        raise ValueError("comparing a run with itself needs two different detectors: give --a and --b "
                         f"(got --a {det_a!r}, --b {det_b!r})")
    doc_a, sa = load_run_scores(dir_a)
    doc_b, sb = (doc_a, sa) if dir_b is None else load_run_scores(dir_b)
    kinds = {doc_a.get("command") == "certify", doc_b.get("command") == "certify"}
    if len(kinds) > 1:
        raise ValueError(f"{dir_a} holds ross {doc_a.get('command')} results and {dir_b} ross {doc_b.get('command')}: "
                         "a certify run pairs only with another certify run (certified bounds against scores "
                         "compare two different things)")
    ood_sets = ([s for s in doc_a.get("set_sizes", {}) if s not in ("id_val", "id_test")] if dir_b is None
                else shared_images(doc_a, doc_b, dir_a, dir_b))
    dets_a = sorted({k[0] for k in sa})
    dets_b = sorted({k[0] for k in sb})
    if det_a or det_b:
        pair = (det_a or det_b, det_b or det_a)  # one name given: the same detector in both runs
        for name, have, run in ((pair[0], dets_a, dir_a), (pair[1], dets_b, dir_b or dir_a)):
            if name not in have:
                raise ValueError(f"detector {name!r} is not in {run} (it has {', '.join(have)})")
        pairs = [pair]
    else:
        if dir_b is None:
            raise ValueError("comparing a run with itself needs two detectors: give --a and --b")
        pairs = [(d, d) for d in dets_a if d in dets_b]
        if not pairs:
            raise ValueError(f"{dir_a} and {dir_b} share no detector; name the two with --a and --b")
    set_groups = doc_a.get("groups", {})
    groups = {g: [s for s in ood_sets if set_groups.get(s) == g] for g in ("near", "far")}
    groups = {g: v for g, v in groups.items() if v and len(v) < len(ood_sets)}  # a group that is not all sets
    keys = sorted({(k[1], k[4]) for k in sa if k[1] != "clean"}, key=str) + [("clean", "clean")]
    rows = []
    for da, db in pairs:
        for eps, target in keys:
            # a certificate bounds both sides at once: its one objective is ID lower vs OOD upper
            objectives = ("clean",) if eps == "clean" else ("both",) if target == "certified" else ("min", "max", "both")
            for objective in objectives:
                pa = _pairs(sa, da, eps, objective, target, ood_sets)
                pb = _pairs(sb, db, eps, objective, target, ood_sets)
                if pa is None or pb is None:
                    continue
                diff = paired_auroc_difference(pa, pb, n_resamples, seed=seed, groups=groups)
                rows.append({"a": da, "b": db, "eps": eps, "objective": objective, "target": target,
                             "auroc_a": _mean_auroc(pa), "auroc_b": _mean_auroc(pb), "diff": diff})
    if not rows:
        raise ValueError(f"{dir_a} ({', '.join(sorted({a for a, _ in pairs}))}) and {dir_b or dir_a} "
                         f"({', '.join(sorted({b for _, b in pairs}))}) share no (eps, objective) with scores for "
                         "every set: nothing to compare")
    return {"a": str(dir_a), "b": str(dir_b or dir_a), "ood_sets": ood_sets, "groups": groups, "rows": rows}


def _mean_auroc(pair) -> float:
    from ross_ood.metrics import auroc_by_ranks
    id_s, ood = pair
    return float(np.mean([auroc_by_ranks(np.asarray(id_s, float), np.asarray(v, float)) for v in ood.values()]))


def budget_label(eps, target: str = "worst") -> str:
    """How a comparison row's eps reads: ``clean``, ``2/255`` (an L-inf attack, pixel units) or
    ``L2 0.25`` (a certificate's radius)."""
    if eps == "clean":
        return "clean"
    return f"L2 {eps:g}" if target == "certified" else eps_label(eps)


def render_comparison(doc: dict) -> str:
    sets = doc["ood_sets"]
    groups = list(doc.get("groups", {}))
    cols = [*(f"{g}-mean" for g in groups), *sets]
    lines = [f"A = {doc['a']}, B = {doc['b']}: AUROC % (mean over {', '.join(sets)}) and A - B with its 95% "
             "paired bootstrap interval over the images, for the mean, the near / far means and per set.", "",
             "| A | B | eps | objective | target | n ID / OOD | A | B | A - B (mean) | "
             + " | ".join(f"A - B ({c})" for c in cols) + " |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(cols)]
    for r in doc["rows"]:
        d = r["diff"]
        eps = budget_label(r["eps"], r["target"])

        def cell(v):
            return f"{100 * v['diff']:+.2f} [{100 * v['lo']:+.2f}, {100 * v['hi']:+.2f}]"
        lines.append(f"| {r['a']} | {r['b']} | {eps} | {r['objective']} | {r['target']} | "
                     f"{d['mean']['n_id']} / {d['mean']['n_ood']} | {pct(r['auroc_a'])} | {pct(r['auroc_b'])} | "
                     f"{cell(d['mean'])} | " + " | ".join(cell(d[c]) for c in [*groups, *sets]) + " |")
    return "\n".join(lines) + "\n"
