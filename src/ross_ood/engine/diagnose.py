"""Attack diagnostics: is the attack, not the detector, the weak link?

After the checklists of Carlini et al. 2019 ("On Evaluating Adversarial Robustness"), Tramer et
al. 2020 ("On Adaptive Attacks to Adversarial Example Defenses") and Pintor et al. 2022
("Indicators of Attack Failure"). For fitted detectors on one benchmark and attack budget:

- **convergence**: the worst-case AUROC with twice the steps (APGD and EOT-PGD) and with twice the
  noisy copies per gradient, beside the budget's own, per detector, eps and objective, with the
  paired difference (2x - 1x) and its 95% bootstrap interval over the images. A converged attack
  moves by at most about a point; a large negative difference says the budget is too small.
- **unbounded budget**: PGD-Both at eps = 1 in pixel units (any image in [0, 1] is allowed).
  The AUROC must reach about 0; if it does not, the attack is failing, not the detector holding.
- **masked gradients**: the gradient-free leg (Square, ``target square``) beside the gradient legs
  (transfer and adaptive), per eps and objective, with the paired difference (gradient-free minus
  the gradient legs' worst case) and its interval. A gradient-free search that beats every
  gradient attack significantly says the gradients are masked (flat, quantised, no autograd):
  the gradient legs' numbers are not robustness, and the worst case over all legs is the one to
  read (Carlini et al. 2019, section 4.6; AutoAttack carries Square for this).
- **plans**: the worst case of every attack plan alone, and how often each plan is the one that
  gives an input its worst case (the first plan on ties).
- **silent failures**: inputs whose worst-case attacked score is worse for the attacker than
  their clean score (an attack that made things better for the defender).
- **objective curves**: the attacker's judged objective along every adaptive plan's iterations
  for a sample of inputs (a PNG), each curve relative to its start.

Everything is computed through ``attack_benchmark`` (the scores are the evaluation's own), so the
diagnosis reads exactly the numbers a results table reports.

``diagnosis_from_runs`` (``ross diagnose``) assembles the same document from four stored attack runs
on the same images (the budget, 2x steps, 2x copies, the unbounded eps), which lets a CPU run the
check in pieces that each fit a session; there the plans are the stored targets (transfer,
adaptive: a run keeps each input's worst per target, not per plan) and there are no curves.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from ross_ood.attacks import run_attack
from ross_ood.engine.adversarial import SIDES, AttackBudget, attack_benchmark, plans_for
from ross_ood.metrics import auroc_by_ranks, paired_auroc_difference
from ross_ood.runs.rundir import with_defaults
from ross_ood.validate import eps_label

__all__ = ["diagnose_attack", "diagnosis_from_runs", "masked_gradient_check", "render_masked_check", "render_diagnosis", "convergence_verdict", "gradient_free_verdict", "convergence_budgets", "worst_per_input", "plot_curves"]

UNBOUNDED_EPS = 1.0  # pixel units: the whole image box
UNBOUNDED_MAX_AUROC = 0.02  # what "about 0" means for the unbounded check


def convergence_budgets(budget: AttackBudget) -> dict[str, AttackBudget]:
    """The budget, the budget with twice the steps (and Square's queries), and with twice the noisy
    copies (of every gradient and of Square's judge)."""
    return {"1x": budget,
            "2x steps": dataclasses.replace(budget, adaptive_steps=2 * budget.adaptive_steps,
                                            eotpgd_steps=2 * budget.eotpgd_steps,
                                            square_queries=2 * budget.square_queries),
            "2x copies": dataclasses.replace(budget, attack_n=2 * budget.attack_n, eotpgd_n=2 * budget.eotpgd_n,
                                             square_n=2 * budget.square_n)}


#: the legs that follow gradients (plan names start with the leg: ``transfer/...``, ``adaptive/...``)
GRADIENT_LEGS = ("transfer", "adaptive")


def worst_per_input(per_plan: dict, det: str, eps, side: str, sets: list[str], legs=None) -> dict[str, np.ndarray]:
    """Per set, the worst score per input over the plans of ``per_plan`` (``attack_benchmark``'s
    ``plan_scores``) of one detector, eps and side (lowest for min, highest for max); ``legs``:
    only the plans of these legs (``transfer``, ``adaptive``, ``square``)."""
    out = {}
    for s in sets:
        c = [v for k, v in per_plan.items() if k[0] == eps and k[1] == side and k[2] == s and k[3] == det
             and (legs is None or k[4].split("/")[0] in legs)]
        out[s] = np.min(c, 0) if side == "min" else np.max(c, 0)
    return out


def _objective_pair(per_plan, clean, det, eps, objective, ood_sets, legs=None):
    """(id scores, {ood set: scores}) of one objective from per-input worst cases (of ``legs``)."""
    id_s = worst_per_input(per_plan, det, eps, "min", ["id_test"], legs)["id_test"] if "min" in SIDES[objective] \
        else clean[det]["id_test"]
    ood = worst_per_input(per_plan, det, eps, "max", ood_sets, legs) if "max" in SIDES[objective] \
        else {s: clean[det][s] for s in ood_sets}
    return id_s, ood


def _mean_auroc(pair) -> float:
    id_s, ood = pair
    return float(np.mean([auroc_by_ranks(np.asarray(id_s), np.asarray(v)) for v in ood.values()]))


def diagnose_attack(model, bench, dets: dict, clean_scores: dict, eps_list, eps_space: str, budget: AttackBudget,
                    seed: int, cache, batch_size: int = 64, block_size: int = 512, progress_factory=None,
                    curve_inputs: int = 8, n_resamples: int = 1000) -> dict:
    """The diagnosis document (see the module doc). ``clean_scores`` is ``EvalResult.scores``."""
    ood_sets = list(bench.ood)
    clean = {n: {s: np.asarray(v["score"], np.float64) for s, v in per.items()} for n, per in clean_scores.items()}
    runs = {}
    for label, b in convergence_budgets(budget).items():
        runs[label] = attack_benchmark(model, bench, dets, clean_scores, eps_list=eps_list, objectives=["min", "max"],
                                       eps_space=eps_space, budget=b, seed=seed, cache=cache, batch_size=batch_size,
                                       block_size=block_size, progress_factory=progress_factory,
                                       n_resamples=0).plan_scores
    conv, plans, silent, masked = [], [], [], []
    for n in dets:
        conv += _convergence_rows(runs, clean, n, eps_list, ood_sets, n_resamples, seed)
        masked += _gradient_free_rows(runs["1x"], clean, n, eps_list, ood_sets, n_resamples, seed)
        for eps in eps_list:
            plans += _plan_table(runs["1x"], clean, n, eps, ood_sets)
            silent += _silent(runs["1x"], clean, n, eps, ood_sets)
    # unbounded budget: PGD-Both at eps = 1 in pixel units
    per_plan = attack_benchmark(model, bench, dets, clean_scores, eps_list=[UNBOUNDED_EPS], objectives=["min", "max"],
                                budget=dataclasses.replace(budget), seed=seed, cache=cache, batch_size=batch_size,
                                block_size=block_size, progress_factory=progress_factory, n_resamples=0).plan_scores
    unbounded = []
    for n in dets:
        a = _mean_auroc(_objective_pair(per_plan, clean, n, UNBOUNDED_EPS, "both", ood_sets))
        unbounded.append({"detector": n, "auroc": a, "ok": a <= UNBOUNDED_MAX_AUROC})
    curves = {n: _curves(model, bench, d, eps_list[0], eps_space, budget, seed, curve_inputs)
              for n, d in dets.items()}
    return {"eps_list": list(eps_list), "eps_space": eps_space, "budget": dataclasses.asdict(budget),
            "convergence": conv, "gradient_free": masked, "unbounded": unbounded, "unbounded_eps": UNBOUNDED_EPS,
            "plans": plans,
            "silent": silent, "curves": curves, "set_sizes": {"id_test": len(bench.id),
                                                              **{s: len(bench.ood[s]) for s in ood_sets}}}


def _convergence_rows(runs: dict, clean: dict, det: str, eps_list, ood_sets, n_resamples: int, seed: int) -> list:
    """Per eps and objective: the worst-case AUROC of each budget in ``runs`` ("1x", "2x steps",
    "2x copies": per-plan scores) and each doubling's paired difference from "1x"."""
    rows = []
    for eps in eps_list:
        for o in ("min", "max", "both"):
            base = _objective_pair(runs["1x"], clean, det, eps, o, ood_sets)
            row = {"detector": det, "eps": eps, "objective": o, "auroc_1x": _mean_auroc(base)}
            for label in ("2x steps", "2x copies"):
                other = _objective_pair(runs[label], clean, det, eps, o, ood_sets)
                d = paired_auroc_difference(other, base, n_resamples, seed=seed)["mean"]
                row[f"auroc_{label}"] = _mean_auroc(other)
                row[f"diff_{label}"] = (d["diff"], d["lo"], d["hi"])
            row["n_id"], row["n_ood"] = len(base[0]), int(sum(len(v) for v in base[1].values()))
            rows.append(row)
    return rows


def _gradient_free_rows(per_plan: dict, clean: dict, det: str, eps_list, ood_sets, n_resamples: int,
                        seed: int) -> list:
    """Per eps and objective: the worst case of the gradient legs alone, of the gradient-free
    leg alone and of all legs, and the paired differences gradient-free - gradient and
    all - gradient. Empty when the plans hold no gradient-free leg."""
    if not any(k[3] == det and k[4].split("/")[0] == "square" for k in per_plan):
        return []
    rows = []
    for eps in eps_list:
        for o in ("min", "max", "both"):
            pairs = {leg: _objective_pair(per_plan, clean, det, eps, o, ood_sets, legs)
                     for leg, legs in (("gradient", GRADIENT_LEGS), ("square", ("square",)), ("worst", None))}
            row = {"detector": det, "eps": eps, "objective": o, "n_id": len(pairs["worst"][0]),
                   "n_ood": int(sum(len(v) for v in pairs["worst"][1].values()))}
            for leg, pair in pairs.items():
                row[f"auroc_{leg}"] = _mean_auroc(pair)
            for leg in ("square", "worst"):
                d = paired_auroc_difference(pairs[leg], pairs["gradient"], n_resamples, seed=seed)["mean"]
                row[f"diff_{leg}"] = (d["diff"], d["lo"], d["hi"])
            rows.append(row)
    return rows


def gradient_free_verdict(row: dict) -> str:
    """"masked" when the gradient-free leg alone beats the gradient legs' worst case with a paired
    interval below zero (their gradients do not find what a search on the values finds), else
    "not masked"; each with the paired difference."""
    d = row["diff_square"]
    text = _diff_text(d)
    if d[2] < 0:
        return (f"**MASKED**: gradient-free beats the gradient legs by {text}: their gradients are masked; "
                "read the worst case")
    return f"not masked: gradient-free does not beat the gradient legs ({text})"


def _stored_plans(scores: dict, det: str) -> dict:
    """A stored attack run's per-input scores (``compare.load_run_scores``) of one detector as
    per-plan scores keyed like ``attack_benchmark``'s ``plan_scores``, the plans being the targets."""
    return {(k[1], k[2], k[3], det, k[4]): v for k, v in scores.items()
            if k[0] == det and k[4] in ("transfer", "adaptive", "square")}


def diagnosis_from_runs(base, steps, copies, unbounded, detector: str | None = None,
                        n_resamples: int = 1000, seed: int = 0) -> dict:
    """The diagnosis document of ``diagnose_attack`` from four stored attack runs of one detector on
    the same images: ``base`` (the budget), ``steps`` and ``copies`` (its budget with twice the
    steps / twice the noisy copies, ``convergence_budgets``), ``unbounded`` (the budget at eps =
    ``UNBOUNDED_EPS`` in pixel units). Runs that do not fit (another model, seed, attack version,
    detector, images or budget) are refused by name. Convergence is reported at the eps the base
    and both doubled runs share."""
    from ross_ood.runs.compare import load_run_scores, shared_images
    from ross_ood.validate import check_int
    n_resamples = check_int("bootstrap", n_resamples)
    dirs = {"base": base, "2x steps": steps, "2x copies": copies, "unbounded": unbounded}
    loaded = {k: load_run_scores(d) for k, d in dirs.items()}
    docs = {k: v[0] for k, v in loaded.items()}
    b = docs["base"]
    for k, d in docs.items():
        if d.get("command") != "attack":
            raise ValueError(f"{dirs[k]} ({k}) holds ross {d.get('command')} results: the diagnosis needs attack runs")
        for field in ("model", "seed", "attack_version", "noise_space"):
            if d.get(field) != b.get(field):
                raise ValueError(f"{dirs[k]} ({k}) has {field} {d.get(field)!r}, the base run {dirs['base']} "
                                 f"{b.get(field)!r}: the pieces of one diagnosis need the same {field}")
    dets = set.intersection(*({x[0] for x in v[1]} for v in loaded.values()))
    if detector is None:
        if len(dets) != 1:
            raise ValueError(f"the runs share detectors {sorted(dets)}: name one (--detector)")
        detector = next(iter(dets))
    elif detector not in dets:
        raise ValueError(f"detector {detector!r} is not in every run (they share {sorted(dets) or 'none'})")
    ood_sets = [s for s in b["set_sizes"] if s not in ("id_val", "id_test")]
    for k in ("2x steps", "2x copies", "unbounded"):
        if shared_images(b, docs[k], dirs["base"], dirs[k]) != ood_sets:
            raise ValueError(f"{dirs[k]} ({k}) does not hold every OOD set of the base run ({', '.join(ood_sets)})")
    defaults = json.loads(json.dumps(dataclasses.asdict(AttackBudget())))
    # a base run stored before a setting existed ran with its old behaviour (rundir.BEFORE_SETTING:
    # no gradient-free leg), not with today's default
    budget = AttackBudget(**with_defaults(b["attack_settings"], defaults))
    want = {**convergence_budgets(budget), "unbounded": budget}
    for k in ("2x steps", "2x copies", "unbounded"):
        expect = json.loads(json.dumps(dataclasses.asdict(want[k])))
        got = with_defaults(docs[k]["attack_settings"], defaults)
        inert = set() if want[k].square_queries else {"square_n"}  # the copies of a leg that does not run
        diff = sorted(f for f in expect if f not in inert and got.get(f) != expect[f])
        if diff:
            raise ValueError(f"{dirs[k]} ({k}) was not run with the base budget{'' if k == 'unbounded' else ' ' + k}: "
                             f"it differs in {', '.join(diff)}")
    if UNBOUNDED_EPS not in docs["unbounded"]["eps_list"] or docs["unbounded"]["eps_space"] != "pixel":
        raise ValueError(f"{dirs['unbounded']} (unbounded) holds no attack at eps = {UNBOUNDED_EPS:g} in pixel units "
                         f"(eps 255/255)")
    eps_list = [e for e in b["eps_list"] if all(e in docs[k]["eps_list"] for k in ("2x steps", "2x copies"))]
    if not eps_list:
        raise ValueError("the base run and the two doubled runs share no eps")
    scores = {k: v[1] for k, v in loaded.items()}
    clean = {detector: {s: v for (d, e, _, s, _), v in scores["base"].items() if d == detector and e == "clean"}}
    runs = {"1x": _stored_plans(scores["base"], detector), "2x steps": _stored_plans(scores["2x steps"], detector),
            "2x copies": _stored_plans(scores["2x copies"], detector)}
    conv = _convergence_rows(runs, clean, detector, eps_list, ood_sets, n_resamples, seed)
    masked = _gradient_free_rows(runs["1x"], clean, detector, b["eps_list"], ood_sets, n_resamples, seed)
    plans, silent = [], []
    for eps in b["eps_list"]:
        plans += _plan_table(runs["1x"], clean, detector, eps, ood_sets)
        silent += _silent(runs["1x"], clean, detector, eps, ood_sets)
    a = _mean_auroc(_objective_pair(_stored_plans(scores["unbounded"], detector), clean, detector, UNBOUNDED_EPS,
                                    "both", ood_sets))
    return {"eps_list": list(b["eps_list"]), "eps_space": b["eps_space"], "budget": b["attack_settings"],
            "convergence": conv, "gradient_free": masked,
            "unbounded": [{"detector": detector, "auroc": a, "ok": a <= UNBOUNDED_MAX_AUROC}],
            "unbounded_eps": UNBOUNDED_EPS, "plans": plans, "silent": silent, "curves": {},
            "set_sizes": {s: b["set_sizes"][s] for s in ["id_test", *ood_sets]},
            "runs": {k: str(d) for k, d in dirs.items()}, "plan_level": "target"}


def masked_gradient_check(run, detector: str | None = None, n_resamples: int = 1000, seed: int = 0) -> dict:
    """The masked-gradient check alone, from one stored attack run that holds the ``square``
    target beside ``transfer`` and ``adaptive`` (``ross diagnose RUN``): per eps and objective the
    gradient legs' worst case, the gradient-free leg's and all legs', paired (``gradient_free_verdict``)."""
    from ross_ood.runs.compare import load_run_scores
    from ross_ood.validate import check_int
    n_resamples = check_int("bootstrap", n_resamples)
    doc, scores = load_run_scores(run)
    if doc.get("command") != "attack":
        raise ValueError(f"{run} holds ross {doc.get('command')} results: the check needs an attack run")
    targets = {k[4] for k in scores}
    missing = [t for t in ("transfer", "adaptive", "square") if t not in targets]
    if missing:
        raise ValueError(f"{run} holds no {', '.join(missing)} target: the check sets the gradient-free leg (square) "
                         "beside the gradient legs (transfer, adaptive); run ross attack --target "
                         "transfer,adaptive,square,worst, or merge a --target square run in with ross combine --legs")
    dets = sorted({k[0] for k in scores})
    if detector is None:
        if len(dets) != 1:
            raise ValueError(f"{run} holds detectors {dets}: name one (--detector)")
        detector = dets[0]
    elif detector not in dets:
        raise ValueError(f"detector {detector!r} is not in {run} (it holds {dets})")
    ood_sets = [s for s in doc["set_sizes"] if s not in ("id_val", "id_test")]
    clean = {detector: {s: v for (d, e, _, s, _), v in scores.items() if d == detector and e == "clean"}}
    rows = _gradient_free_rows(_stored_plans(scores, detector), clean, detector, doc["eps_list"], ood_sets,
                               n_resamples, seed)
    return {"eps_list": doc["eps_list"], "eps_space": doc["eps_space"], "gradient_free": rows, "run": str(run),
            "set_sizes": {s: doc["set_sizes"][s] for s in ["id_test", *ood_sets]}}


def render_masked_check(doc: dict) -> str:
    sz = doc["set_sizes"]
    head = (f"# Masked-gradient check\n\nRun `{doc['run']}`. Images: {sz['id_test']} ID test, "
            + ", ".join(f"{v} {k}" for k, v in sz.items() if k != "id_test")
            + f"; eps in {doc['eps_space']} space. AUROC in percent, mean over the OOD sets; differences paired "
              "over the same images with 95% bootstrap intervals.\n")
    return "\n".join([head, *_render_gradient_free(doc)]) + "\n"


def _plan_table(per_plan, clean, det, eps, ood_sets) -> list[dict]:
    """Per plan: its AUROC alone (PGD-Min and PGD-Max, mean over sets) and its share of wins."""
    out = []
    for side in ("min", "max"):
        sets = ["id_test"] if side == "min" else ood_sets
        names = [k[4] for k in per_plan if k[0] == eps and k[1] == side and k[2] == sets[0] and k[3] == det]
        stacked = {s: np.stack([per_plan[(eps, side, s, det, p)] for p in names]) for s in sets}
        pick = {s: (v.argmin(0) if side == "min" else v.argmax(0)) for s, v in stacked.items()}
        total = sum(len(p) for p in pick.values())
        for i, p in enumerate(names):
            alone = {s: stacked[s][i] for s in sets}
            pair = (alone["id_test"], {s: clean[det][s] for s in ood_sets}) if side == "min" \
                else (clean[det]["id_test"], alone)
            wins = sum(int((pk == i).sum()) for pk in pick.values())
            out.append({"detector": det, "eps": eps, "objective": side, "plan": p, "auroc": _mean_auroc(pair),
                        "wins": wins, "inputs": total})
    return out


def _silent(per_plan, clean, det, eps, ood_sets) -> list[dict]:
    """Inputs whose worst case is worse for the attacker than the clean input (per side)."""
    out = []
    for side in ("min", "max"):
        sets = ["id_test"] if side == "min" else ood_sets
        worst = worst_per_input(per_plan, det, eps, side, sets)
        bad = sum(int((worst[s] > clean[det][s]).sum() if side == "min" else (worst[s] < clean[det][s]).sum())
                  for s in sets)
        out.append({"detector": det, "eps": eps, "objective": side, "silent_failures": bad,
                    "inputs": int(sum(len(worst[s]) for s in sets))})
    return out


def _curves(model, bench, det, eps, eps_space, budget, seed, k) -> dict:
    """The judged objective along every adaptive plan for the first ``k`` ID test inputs
    (PGD-Min) and the first ``k`` inputs of the first OOD set (PGD-Max), relative to the start."""
    out = {}
    first = next(iter(bench.ood))
    for side, ds in (("min", bench.id), ("max", bench.ood[first])):
        x = torch.stack([ds[i][0] for i in range(min(k, len(ds)))]).to(model.device)
        for plan in plans_for("d", det, eps, side, eps_space, ["adaptive"], budget, seed):
            trace: list = []
            fn = det.surrogate(plan.what, plan.copies(budget))
            judge = det.judge(budget.judge_n) if budget.judge else None
            run_attack(fn, x, model, plan.cfg, judge=judge, trace=trace, apgd_judge_every=budget.apgd_judge_every)
            curves = np.full((plan.cfg.restarts, max(t[1] for t in trace) + 1, len(x)), np.nan)
            for r, step, idx, f in trace:
                curves[r, step, idx] = f
            out[f"{side}/{plan.name.split('/', 2)[2]}"] = curves.tolist()
    return out


#: how far (AUROC, as a fraction) doubling steps or copies may lower the worst case of a converged attack
CONVERGENCE_TOLERANCE = 0.01


def convergence_verdict(row: dict, tol: float = CONVERGENCE_TOLERANCE) -> str:
    """"converged" when neither twice the steps nor twice the copies lowers the worst-case AUROC by
    more than ``tol``; else "not converged", naming the doubling and its paired difference."""
    bad = [(label, row[f"diff_{label}"]) for label in ("2x steps", "2x copies") if row[f"diff_{label}"][0] < -tol]
    if not bad:
        return "converged"
    return "not converged: " + "; ".join(f"{label} lowers it by {-100 * v[0]:.2f} [{100 * v[1]:+.2f}, "
                                          f"{100 * v[2]:+.2f}]" for label, v in bad)


def _diff_text(v) -> str:
    """A paired difference (diff, lo, hi) as fractions, in AUROC points: ``+1.23 [+0.45, +2.01]``."""
    return f"{100 * v[0]:+.2f} [{100 * v[1]:+.2f}, {100 * v[2]:+.2f}]"


def render_diagnosis(doc: dict) -> str:
    sz = doc["set_sizes"]
    lines = [f"# Attack diagnosis\n\nImages: {sz['id_test']} ID test, "
             + ", ".join(f"{v} {k}" for k, v in sz.items() if k != "id_test")
             + f"; eps {', '.join(f'{eps_label(e)}' for e in doc['eps_list'])} ({doc['eps_space']}). "
             "AUROC in percent, mean over the OOD sets; differences paired over the same images with "
             "95% bootstrap intervals.\n", "## Convergence (worst case over all plans)\n",
             "| detector | eps | objective | budget | 2x steps | 2x steps - budget | 2x copies | 2x copies - budget "
             "| verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["convergence"]:
        def d(label):
            return _diff_text(r[f"diff_{label}"])
        lines.append(f"| {r['detector']} | {eps_label(r['eps'])} | {r['objective']} | {100 * r['auroc_1x']:.2f} | "
                     f"{100 * r['auroc_2x steps']:.2f} | {d('2x steps')} | {100 * r['auroc_2x copies']:.2f} | "
                     f"{d('2x copies')} | {convergence_verdict(r)} |")
    lines += ["", f"Verdict: converged when neither doubling lowers the worst case by more than "
              f"{100 * CONVERGENCE_TOLERANCE:g} AUROC point.",
              ""]
    lines += _render_gradient_free(doc)
    lines += ["", f"## Unbounded budget (PGD-Both at eps = {doc['unbounded_eps']:g}, pixel units)\n",
              "| detector | AUROC | reaches ~0 (<= 2) |", "|---|---|---|"]
    lines += [f"| {r['detector']} | {100 * r['auroc']:.2f} | {'yes' if r['ok'] else '**NO: the attack fails**'} |"
              for r in doc["unbounded"]]
    plan_note = ("" if doc.get("plan_level") != "target" else
                 " (from stored runs: the plans are the targets, transfer and adaptive, each the worst over its own plans)")
    lines += ["", f"## Each plan alone, and which plan wins{plan_note}\n",
              "| detector | eps | objective | plan | AUROC alone | inputs it gives the worst case |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['detector']} | {eps_label(r['eps'])} | {r['objective']} | {r['plan']} | {100 * r['auroc']:.2f} | "
              f"{r['wins']} of {r['inputs']} |" for r in doc["plans"]]
    lines += ["", "## Silent failures (worst case better for the defender than the clean input)\n",
              "| detector | eps | objective | inputs |", "|---|---|---|---|"]
    lines += [f"| {r['detector']} | {eps_label(r['eps'])} | {r['objective']} | {r['silent_failures']} of {r['inputs']} |"
              for r in doc["silent"]]
    if doc.get("curves"):
        lines += ["", "Objective curves: `objective-curves.png` (the attacker's judged objective minus its start value, "
                  "per input, along each adaptive plan; restarts dashed)."]
    if doc.get("runs"):
        lines += ["", "Assembled from stored runs (`ross diagnose`): "
                  + "; ".join(f"{k}: `{v}`" for k, v in doc["runs"].items()) + ". No objective curves (a stored run "
                  "keeps none)."]
    return "\n".join(lines) + "\n"


def _render_gradient_free(doc: dict) -> list[str]:
    lines = ["## Masked gradients: the gradient-free leg beside the gradient legs\n"]
    rows = doc.get("gradient_free") or []
    if not rows:
        return lines + ["No gradient-free leg in this attack (square_queries 0, or a stored run from before it "
                        "existed): masked gradients are not checked."]
    lines += ["| detector | eps | objective | gradient legs | gradient-free | all legs | gradient-free - gradient "
              "| all - gradient | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def d(k):
            return _diff_text(r[f"diff_{k}"])
        lines.append(f"| {r['detector']} | {eps_label(r['eps'])} | {r['objective']} | {100 * r['auroc_gradient']:.2f} | "
                     f"{100 * r['auroc_square']:.2f} | {100 * r['auroc_worst']:.2f} | {d('square')} | {d('worst')} | "
                     f"{gradient_free_verdict(r)} |")
    masked = [r for r in rows if r["diff_square"][2] < 0]
    verdict = ("the gradient-free leg beats the gradient legs in " + ", ".join(
        f"{r['detector']} {eps_label(r['eps'])} {r['objective']}" for r in masked)
        + ": there the gradients are masked and the worst case (all legs) is the number to read") if masked \
        else "the gradient-free leg beats the gradient legs nowhere (no paired interval below zero)"
    return lines + ["", "Verdict: " + verdict + "."]


def plot_curves(doc: dict, path) -> None:
    from ross_ood.runs.plots import _plt, _save
    plt = _plt()
    dets = list(doc["curves"])
    panels = [(d, k) for d in dets for k in doc["curves"][d]]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax, (d, k) in zip(axes.flat, panels):
        c = np.asarray(doc["curves"][d][k], float)  # (restarts, steps, inputs)
        for r in range(c.shape[0]):
            for i in range(c.shape[2]):
                v = c[r, :, i]
                ok = ~np.isnan(v)
                if ok.any():
                    steps = np.flatnonzero(ok)
                    ax.plot(steps, v[ok] - v[ok][0], ls="-" if r == 0 else "--", lw=0.8, color=f"C{i % 10}")
        ax.set_title(f"{d}: {k}", fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("gain - start", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    _save(fig, path)
