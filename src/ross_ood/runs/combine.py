"""``ross combine OUT RUN...``: one table from the pieces of a run too long for one session.

A long ``ross eval``, ``ross attack`` or ``ross certify`` is split with ``--part K/M``: the same settings, each
piece the K-th of M disjoint, interleaved parts of every evaluated set (ID test and each OOD
set; the ID validation split, which calibrates, is the same whole split in every piece). Each
piece finishes on its own and is stored with its per-input scores; ``combine`` concatenates
those scores (a certify piece: its per-input certified bounds) and recomputes every metric, interval and mean from them, exactly as one run over
all the images would (the bootstrap resamples the combined images). Pieces run with different
settings, models, benchmarks or attack versions, the same part twice, parts of different
splits, or on the same images (equal set fingerprints) are refused by name.

Attack pieces run with different ``--eps`` lists combine only when asked for budgets that every piece
holds (``eps=``, ``ross combine --eps 2``): each budget's attack is run on its own (its plans are seeded
by the run's seed and that budget alone), so the cells of one budget do not depend on which other budgets
ran beside it, and the table holds just those budgets. This lets the costly cells of a row (2/255 at 500
images per set) grow in more pieces than the rest (8/255 at 200).

``ross combine --legs`` (``merge_legs``) joins the other way: runs on the *same* images that ran
different attack legs (a stored run and the gradient-free leg run after it) become one run whose
worst case is per input over every leg of every run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ross_ood.attacks import LEG_SETTINGS
from ross_ood.metrics import group_means, ood_records
from ross_ood.runs.rundir import (
    BEFORE_SETTING,
    RUN_ONLY_SETTINGS,
    load_bounds,
    load_run_scores,
    prepare_out,
    save_bounds,
    save_input_scores,
    with_defaults,
    write_results,
)
from ross_ood.runs.tables import precisions_text, render
from ross_ood.validate import eps_label as _label
from ross_ood.validate import parse_part

__all__ = ["combine_runs", "merge_legs", "part_precisions"]

def _check_pieces(docs: list[tuple[Path, dict]], eps: list[float] | None = None, defaults: dict | None = None) -> int:
    first_dir, first = docs[0]
    kind = first.get("command")
    if kind not in ("eval", "attack", "certify"):
        raise ValueError(f"{first_dir}: only ross eval, attack and certify runs can be combined, not {kind!r}")
    defaults = json.loads(json.dumps((defaults or {}).get(kind, {})))  # as config.yaml holds them (lists, not tuples)
    parts = []
    for d, doc in docs:
        if doc.get("command") != kind:
            raise ValueError(f"{d} holds ross {doc.get('command')} results, {first_dir} ross {kind}: not one table")
        part = parse_part((doc.get("config") or {}).get("part"))
        if part is None:
            raise ValueError(f"{d} was not run as a part (--part K/M): only the parts of one split combine")
        parts.append(part)
        for key in ("benchmark", "model", "models", "attack_version", "eps_space", "noise_space"):
            if doc.get(key) != first.get(key):
                raise ValueError(f"{d} and {first_dir} differ in {key} ({doc.get(key)!r} vs {first.get(key)!r})")
        if eps is not None:
            missing = [e for e in eps if not _holds(doc.get("eps_list", []), e)]
            if missing:
                raise ValueError(f"{d} holds no attack at eps {', '.join(_label(e) for e in missing)} (it holds "
                                 f"{', '.join(_label(e) for e in doc.get('eps_list', [])) or 'none'}): "
                                 "combine only budgets every piece holds")
        # precision: what was asked (auto, bf16) may differ; what ran is compared by part_precisions
        skip = RUN_ONLY_SETTINGS + ("precision",) + (("eps",) if eps is not None else ())
        a = {k: v for k, v in with_defaults(doc["config"], defaults).items() if k not in skip}
        b = {k: v for k, v in with_defaults(first["config"], defaults).items() if k not in skip}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            hint = ("; attack pieces with other eps lists combine at the budgets they share with --eps "
                    f"({', '.join(_label(e) for e in _shared_eps(docs)) or 'none shared'})"
                    if diff == ["eps"] and kind == "attack" else "")
            raise ValueError(f"{d} and {first_dir} were run with other settings ({', '.join(diff)}): "
                             f"only parts of one run combine{hint}")
    if len({m for _, m in parts}) != 1:
        raise ValueError(f"the pieces are parts of different splits: {sorted({f'{k}/{m}' for k, m in parts})}")
    seen: dict = {}
    for (d, _), (k, m) in zip(docs, parts):
        if k in seen:
            raise ValueError(f"{d} and {seen[k]} are both part {k}/{m}: the same images twice")
        seen[k] = d
    for i, (d, doc) in enumerate(docs):
        for d2, doc2 in docs[:i]:
            for s, fp in (doc.get("set_fingerprints") or {}).items():
                if fp == (doc2.get("set_fingerprints") or {}).get(s):
                    raise ValueError(f"{d} and {d2} hold the same images of {s} (equal set fingerprints)")
    return parts[0][1]


def _holds(eps_list, e) -> bool:
    """Whether the budget ``e`` is in ``eps_list`` (floats parsed from the same text: equal to 1e-12)."""
    return any(abs(e - x) < 1e-12 for x in eps_list)


def _shared_eps(docs: list[tuple[Path, dict]]) -> list[float]:
    """The attack budgets every piece holds, in the first piece's order."""
    return [e for e in docs[0][1].get("eps_list", []) if all(_holds(doc.get("eps_list", []), e) for _, doc in docs)]


def _combine_certify(dirs: list, out: Path, n_resamples: int | None, defaults: dict | None) -> dict:
    """``combine_runs`` for ``ross certify`` pieces: their per-input certified bounds concatenated,
    every certified metric recomputed from them (``certify.records_from_bounds``)."""
    from ross_ood.certify import records_from_bounds
    docs = []
    for d in map(Path, dirs):
        res = d / "results.json"
        if not res.is_file():
            raise FileNotFoundError(f"{d} holds no results.json: not a finished ross certify run")
        docs.append((d, json.loads(res.read_text())))
    m = _check_pieces(docs, defaults=defaults)
    docs.sort(key=lambda t: parse_part(t[1]["config"]["part"])[0])
    first = docs[0][1]
    if "value_ranges" not in first:
        raise ValueError(f"{docs[0][0]} was written before certify stored per-input bounds; re-run it with this "
                         "version of ross-ood")
    loaded = [load_bounds(d) for d, _ in docs]
    keys = set(loaded[0])
    for (d, _), b in zip(docs[1:], loaded[1:]):
        if set(b) != keys:
            raise ValueError(f"{d} holds certified bounds of other (detector, sigma, radius, set) cells than "
                             f"{docs[0][0]}: not parts of one run")
    bounds = {k: np.concatenate([b[k] for b in loaded]) for k in sorted(keys, key=str)}
    seed = int(first["config"].get("seed", 0))
    n_res = int(first["config"].get("bootstrap", 1000)) if n_resamples is None else int(n_resamples)
    groups = first["groups"]
    records = []
    cells = list(dict.fromkeys((r["detector"], float(r["sigma"])) for r in first["means"]))
    fields = ("detector", "sigma", "norm", "noise_space", "n_samples", "alpha", "model")
    for det, sig in cells:
        per: dict = {}
        for rad in ["clean", *map(float, first["radii"])]:
            per[rad] = {s: bounds[(det, sig, rad, s)] for s in ["id_test", *groups]}
        ref = next(r for r in first["means"] if r["detector"] == det and float(r["sigma"]) == sig)
        records += records_from_bounds(per, groups, first["value_ranges"][det], {k: ref[k] for k in fields},
                                       n_res, seed)
    sizes = {s: int(sum(doc["set_sizes"][s] for _, doc in docs)) for s in first["set_sizes"] if s != "id_val"}
    if "id_val" in first["set_sizes"]:
        sizes = {"id_val": first["set_sizes"]["id_val"], **sizes}  # the same calibration split in every piece
    accs = [doc.get("id_accuracy") or {} for _, doc in docs]
    accuracy = {}
    for sig in accs[0]:  # weighted by each piece's ID images; only where every piece measured it
        if all(a.get(sig, {}).get("n") for a in accs):
            n = [a[sig]["n"] for a in accs]
            accuracy[sig] = {k: float(np.average([a[sig][k] for a in accs], weights=n)) for k in ("clean", "noisy")}
            accuracy[sig]["n"] = int(sum(n))
    doc = {**first, "set_sizes": sizes, "results": [r for r in records if r["ood_set"] != "mean"],
           "means": [r for r in records if r["ood_set"] == "mean"], "id_accuracy": accuracy,
           "set_fingerprints": [doc.get("set_fingerprints") for _, doc in docs],
           "wall_time_s": float(sum(doc["wall_time_s"] for _, doc in docs)),
           "combined_from": [str(d) for d, _ in docs], "parts": m,
           "notes": list(first.get("notes", [])) + [f"combined from {len(docs)} of {m} disjoint parts "
                                                   f"({', '.join(str(d) for d, _ in docs)}) by ross combine: "
                                                   "certified metrics recomputed over all their images"]}
    prepare_out(out)
    save_bounds(out, bounds)
    write_results(out, doc, render(doc))
    return doc


def combine_runs(dirs: list, out: str | Path, n_resamples: int | None = None, eps=None,
                 defaults: dict | None = None) -> dict:
    """Combine the stored pieces ``dirs`` into one run folder ``out`` (results and per-input
    scores, or certified bounds); returns its results document. ``eps`` (attack pieces only; the
    forms ``ross attack --eps`` takes, e.g. ``"2"`` or ``["2", "8/255"]``): combine just these
    budgets, which every piece must hold; the pieces may then differ in their ``--eps`` lists.
    ``defaults``: {command: its settings' defaults}, filled into stored configs that predate a
    setting (``rundir.with_defaults``) before the pieces' settings are compared."""
    if len(dirs) < 2:
        raise ValueError("combine needs at least two pieces")
    eps_keep = None
    if eps is not None:
        from ross_ood.validate import parse_eps
        eps_keep = parse_eps(eps)
        if not eps_keep:
            raise ValueError("combine: eps names no budget (give e.g. 2 or 2,8)")
    kinds = set()
    for d in dirs:
        res = Path(d) / "results.json"
        if res.is_file():
            kinds.add(json.loads(res.read_text()).get("command"))
    if "certify" in kinds or "eval" in kinds:
        if eps_keep is not None:
            raise ValueError(f"combine: eps selects attack budgets, but the pieces hold ross "
                             f"{', '.join(sorted(map(str, kinds)))} results")
    if "certify" in kinds:
        if len(kinds) > 1:
            raise ValueError(f"the pieces hold results of different commands ({', '.join(sorted(map(str, kinds)))}): "
                             "not one table")
        return _combine_certify(dirs, Path(out), n_resamples, defaults)
    loaded = [(Path(d), *load_run_scores(d)) for d in dirs]
    m = _check_pieces([(d, doc) for d, doc, _ in loaded], eps_keep, defaults)
    loaded.sort(key=lambda t: parse_part(t[1]["config"]["part"])[0])
    if eps_keep is not None:  # each piece cut to the kept budgets (clean scores stay)
        def kept(e):
            return e == "clean" or _holds(eps_keep, e)
        loaded = [(d, {**doc, "eps_list": [e for e in doc["eps_list"] if kept(e)],
                       "means": [r for r in doc["means"] if kept(r["eps"])],
                       "results": [r for r in doc["results"] if kept(r["eps"])]},
                   {k: v for k, v in sc.items() if kept(k[1])}) for d, doc, sc in loaded]
    first = loaded[0][1]
    if eps_keep is not None:
        first["config"] = {**first["config"], "eps": [_label(e) for e in first["eps_list"]]}
    keys = set(loaded[0][2])
    for d, _, sc in loaded[1:]:
        if set(sc) != keys:
            raise ValueError(f"{d} holds per-input scores of other (detector, attack, set) cells than "
                             f"{loaded[0][0]}: not parts of one run")
    # the ID validation split is whole in every piece (it calibrates): kept once, the rest concatenated
    scores = {k: loaded[0][2][k] if k[3] == "id_val" else np.concatenate([sc[k] for _, _, sc in loaded])
              for k in sorted(keys, key=str)}
    seed = int(first["config"].get("seed", 0))
    n_res = int(first["config"].get("bootstrap", 1000)) if n_resamples is None else int(n_resamples)
    groups = first["groups"]
    dets = list(dict.fromkeys(r["detector"] for r in first.get("clean", first.get("results", []))))
    clean_recs, clean_means = [], []
    for det in dets:
        recs = ood_records(scores[(det, "clean", "clean", "id_test", "clean")],
                           {s: scores[(det, "clean", "clean", s, "clean")] for s in groups}, groups,
                           group_means(groups), {"detector": det}, n_res, seed)
        clean_recs += [r for r in recs if r["ood_set"] in groups]
        clean_means += [r for r in recs if r["ood_set"] not in groups]
    sizes = {s: int(sum(doc["set_sizes"][s] for _, doc, _ in loaded)) for s in first["set_sizes"]}
    sizes["id_val"] = first["set_sizes"]["id_val"]  # the same calibration split in every piece
    n_test = [doc["set_sizes"]["id_test"] for _, doc, _ in loaded]
    acc = float(np.average([doc["id_accuracy"] for _, doc, _ in loaded], weights=n_test))
    doc = {**first, "set_sizes": sizes, "id_accuracy": acc,
           "set_fingerprints": [doc.get("set_fingerprints") for _, doc, _ in loaded],
           "wall_time_s": float(sum(doc["wall_time_s"] for _, doc, _ in loaded)),
           "combined_from": [str(d) for d, _, _ in loaded], "parts": m,
           "notes": list(first.get("notes", [])) + [f"combined from {len(loaded)} of {m} disjoint parts ({', '.join(str(d) for d, _, _ in loaded)}) "
                                                   "by ross combine: metrics recomputed over all their images"
                                                   + ("" if eps_keep is None else
                                                      f", at eps {', '.join(_label(e) for e in first['eps_list'])} "
                                                      "only (ross combine --eps)")]}
    doc.pop("id_accuracy_val_and_test", None)
    ran = part_precisions([(d, doc) for d, doc, _ in loaded])
    if len(set(ran.values())) > 1:
        doc["part_precisions"] = ran
        doc["notes"].append("the parts' attacks ran at different precisions (" + precisions_text(ran) + "): their "
                            "gradient steps differ by float rounding; each part's attack is a valid attack on its own "
                            "images, so the combined worst case is one too")
    if first["command"] == "eval":
        doc.update(results=clean_recs, means=clean_means)
    else:
        cells = [{k: r[k] for k in ("detector", "attack", "target", "eps", "eps_space", "objective")}
                 for r in first["means"]]
        records, means = _attack_records(scores, cells, groups, n_res, seed)
        doc.update(clean=clean_recs, clean_means=clean_means, results=records, means=means)
    out = Path(out)
    prepare_out(out)
    clean = {}
    for (det, eps, _, s, _), v in scores.items():
        if eps == "clean":
            clean.setdefault(det, {})[s] = {"score": v}
    save_input_scores(out, clean, {k: v for k, v in scores.items() if k[1] != "clean"})
    write_results(out, doc, render(doc))
    return doc


def part_precisions(docs: list[tuple[Path, dict]]) -> dict:
    """{part "K/M": the precision its attacks ran at} of attack pieces (``attack_settings``; runs stored
    before the setting ran in float32); {} for other commands."""
    return {doc["config"]["part"]: (doc.get("attack_settings") or {}).get("precision", BEFORE_SETTING["precision"])
            for _, doc in docs if doc.get("command") == "attack"}


def _attack_records(scores: dict, cells: list[dict], groups: dict, n_res: int, seed: int) -> tuple[list, list]:
    """Per-set records and the mean over the sets of each attacked cell (detector, attack, target,
    eps, eps_space, objective), recomputed from per-input ``scores``: the attacked side(s) of the
    objective from the cell's target, the other side clean."""
    sides = {"min": ("min",), "max": ("max",), "both": ("min", "max")}
    records, means = [], []
    for c in cells:
        def get(side, s):
            if side in sides[c["objective"]]:
                return scores[(c["detector"], float(c["eps"]), side, s, c["target"])]
            return scores[(c["detector"], "clean", "clean", s, "clean")]
        recs = ood_records(get("min", "id_test"), {s: get("max", s) for s in groups}, groups,
                           {"mean": ("all", list(groups))}, dict(c), n_res, seed)
        records += recs[:-1]
        means.append(recs[-1])
    return records, means


def _worse(old: np.ndarray | None, new: np.ndarray, side: str) -> np.ndarray:
    """Per input, the score worse for the defender (lower for ``min``, higher for ``max``)."""
    if old is None:
        return new
    return np.minimum(old, new) if side == "min" else np.maximum(old, new)


def merge_legs(dirs: list, out: str | Path, n_resamples: int | None = None) -> dict:
    """``ross combine --legs OUT RUN...``: attack runs on the *same* images (the same model, seed,
    benchmark, part, attack version and detectors) that ran different legs, e.g. a stored run and
    a later ``--target square`` run, as one run: per input, each target's worst over the runs that
    hold it, and ``worst`` the worst over every target of every run (each is a valid attack on the
    same image, so the worst of them is too). Budgets every run holds are kept. Clean scores must
    agree (to 1e-6): the same detector on the same images. Returns the merged results document."""
    if len(dirs) < 2:
        raise ValueError("combine --legs needs at least two runs")
    loaded = [(Path(d), *load_run_scores(d)) for d in dirs]
    first_dir, first, _ = loaded[0]
    for d, doc, _ in loaded:
        if doc.get("command") != "attack":
            raise ValueError(f"{d} holds ross {doc.get('command')} results: --legs merges attack runs")
        for key in ("benchmark", "model", "seed", "attack_version", "eps_space", "noise_space", "set_fingerprints",
                    "groups"):
            if doc.get(key) != first.get(key):
                raise ValueError(f"{d} and {first_dir} differ in {key}: --legs merges attack runs on the same "
                                 "images, model and seed")
    configs = [{x["name"]: {k: v for k, v in x.items() if k != "name"} for x in doc["detectors"]} for _, doc, _ in loaded]
    dets = [n for n in configs[0] if all(n in c for c in configs)]
    if not dets:
        raise ValueError("the runs share no detector")
    for (d, _, _), c in zip(loaded[1:], configs[1:]):
        for n in dets:
            if c[n] != configs[0][n]:
                raise ValueError(f"{d}: detector {n} has other settings than in {first_dir}")
    eps_list = _shared_eps([(d, doc) for d, doc, _ in loaded])
    if not eps_list:
        raise ValueError("the runs share no attack budget")
    clean = {}
    for d, _, sc in loaded:
        for k, v in sc.items():
            if k[1] != "clean" or k[0] not in dets:
                continue
            if k in clean and not np.allclose(clean[k], v, rtol=0, atol=1e-6):
                raise ValueError(f"{d}: the clean scores of {k[0]} on {k[3]} differ from {first_dir}'s: not the same "
                                 "detector on the same images")
            clean.setdefault(k, v)
    targets, per_target, legs_from = [], {}, {}
    for d, doc, sc in loaded:
        for (det, eps, side, s, tgt), v in sc.items():
            if eps == "clean" or det not in dets or not _holds(eps_list, eps):
                continue
            if tgt not in targets:
                targets.append(tgt)
            legs_from.setdefault(tgt, [])
            if str(d) not in legs_from[tgt]:
                legs_from[tgt].append(str(d))
            key = (det, float(eps), side, s, tgt)
            per_target[key] = _worse(per_target.get(key), v, side)
    targets = [t for t in targets if t != "worst"] + ["worst"]
    scores = dict(clean)
    for (det, eps, side, s, tgt), v in per_target.items():
        if tgt != "worst":
            scores[(det, eps, side, s, tgt)] = v
        scores[(det, eps, side, s, "worst")] = _worse(scores.get((det, eps, side, s, "worst")), v, side)
    objectives = [o for o in dict.fromkeys(r["objective"] for r in first["means"])
                  if all(any(r["objective"] == o for r in doc["means"]) for _, doc, _ in loaded)]
    seed = int(first["config"].get("seed", 0))
    n_res = int(first["config"].get("bootstrap", 1000)) if n_resamples is None else int(n_resamples)
    cells = [{"detector": det, "attack": "worst-of" if tgt == "worst" else tgt, "target": tgt, "eps": eps,
              "eps_space": first["eps_space"], "objective": objective}
             for det in dets for eps in eps_list for objective in objectives for tgt in targets]
    records, means = _attack_records(scores, cells, first["groups"], n_res, seed)
    settings = dict(first["attack_settings"])  # each leg's settings from the first run that holds the leg
    by_dir = {str(d): doc["attack_settings"] for d, doc, _ in loaded}
    for tgt, names in LEG_SETTINGS.items():
        if tgt in legs_from:
            src = by_dir[legs_from[tgt][0]]
            settings.update({k: v for k, v in src.items() if k in names})
    doc = {**first, "targets": targets, "eps_list": eps_list, "results": records, "means": means,
           "clean": [r for r in first["clean"] if r["detector"] in dets],
           "clean_means": [r for r in first["clean_means"] if r["detector"] in dets],
           "detectors": [x for x in first["detectors"] if x["name"] in dets], "attack_settings": settings,
           "legs_from": legs_from, "wall_time_s": float(sum(doc["wall_time_s"] for _, doc, _ in loaded)),
           "notes": list(first.get("notes", [])) + [
               f"legs merged from {len(loaded)} runs on the same images ({', '.join(str(d) for d, _, _ in loaded)}) "
               "by ross combine --legs: per input the worst over the runs of each target, worst over all"]}
    out = Path(out)
    prepare_out(out)
    clean_dict: dict = {}
    for (det, _, _, s, _), v in clean.items():
        clean_dict.setdefault(det, {})[s] = {"score": v}
    save_input_scores(out, clean_dict, {k: v for k, v in scores.items() if k[1] != "clean"})
    write_results(out, doc, render(doc))
    return doc
