"""Attack strength against a plain reference, per input and paired (issue 17).

    python benchmarks/bench_strength.py --model resnet20-noise012 --detectors median-msp \\
        --sigma 0.12 --noise-space pixel --eps 2 --eps-space pixel --limit 40 --ood tin \\
        --configs v3,new --reference --out runs/strength/x.npz

Runs ``attack_benchmark`` (transfer + adaptive plans, per-input worst case) once per attack
configuration, and the independent plain EOT-PGD of ``tests/reference_attack.py`` (16 copies per
gradient, 60 cosine-scheduled steps, best iterate by the median over 16 fixed draws), on the same
images, all scored by the detector exactly as the evaluation scores them. Prints per
configuration: passes per attacked image, worst-case AUROC under PGD-Min, PGD-Max and PGD-Both
(mean over the OOD sets), and the paired difference to the reference and to the first
configuration with its 95% paired bootstrap interval (``metrics.paired_auroc_difference``).
``--out`` keeps every per-input array as JSON (``--load`` re-prints from such files, merged).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.bench_attack import PassCounter  # noqa: E402
from ross_ood.engine.adversarial import AttackBudget, attack_benchmark  # noqa: E402
from ross_ood.engine.diagnose import convergence_budgets, worst_per_input  # noqa: E402

V3 = AttackBudget(judge=False, attack_n=8, apgd_eta0=2.0, eotpgd_steps=0)  # the default of attack version 3
NEW = AttackBudget()
CONFIGS = {
    "v3": V3,
    "judge": dataclasses.replace(V3, judge=True),
    "judge-eta": dataclasses.replace(V3, judge=True, apgd_eta0=0.25),
    "judge-n16": dataclasses.replace(V3, judge=True, attack_n=16),
    "eot": dataclasses.replace(V3, judge=True, surrogates=(), eotpgd_steps=60, eotpgd_n=16),
    "eot-median": dataclasses.replace(V3, judge=True, surrogates=(), eotpgd_steps=60, eotpgd_n=16,
                                      eotpgd_surrogates=("median",)),
    "new": NEW,
    "new-2steps": convergence_budgets(NEW)["2x steps"],
    "new-2copies": convergence_budgets(NEW)["2x copies"],
    "new-bf16": dataclasses.replace(NEW, precision="bf16"),
    "new-fp32": dataclasses.replace(NEW, precision="fp32"),
    # cheaper judges (issue 24): the same common random numbers, fewer copies per judgement
    "judge8": dataclasses.replace(NEW, judge_n=8),
    "judge12": dataclasses.replace(NEW, judge_n=12),
}


def reference_scores(run, det_name, det, eps_px, sets, objective, seed):
    from ross_ood.noise import channel_scale
    from tests.reference_attack import reference_eotpgd
    sigma_px = channel_scale(run.model.std, det.sigma, det.noise_space) if hasattr(det, "sigma") else None
    clip = getattr(det, "noise_space", "pixel") == "pixel"
    out = {}
    for s in sets:
        ds = run.bench.id if s == "id_test" else run.bench.ood[s]
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        advs = []
        for i in range(0, len(xs), 64):
            x = xs[i:i + 64]
            if sigma_px is None:  # a plain score: the same loop with sigma 0 (one copy suffices)
                adv = reference_eotpgd(lambda v: det.base(run.model, v), x, torch.zeros_like(run.model.std), eps_px,
                                       objective, clip, copies=1, judge_copies=1, seed=seed + i)
            else:
                adv = reference_eotpgd(lambda v: det.base(run.model, v), x, sigma_px, eps_px, objective, clip,
                                       seed=seed + i)
            advs.append(adv)
        with torch.no_grad():
            out[s] = det.score(torch.cat(advs)).double().numpy()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--detectors", default="median-msp")
    ap.add_argument("--eps", default="2")
    ap.add_argument("--eps-space", default="pixel")
    ap.add_argument("--ood", default="tin")
    ap.add_argument("--configs", default="v3,new")
    ap.add_argument("--reference", action="store_true", help="also run the plain reference EOT-PGD")
    ap.add_argument("--model", default="resnet20-noise012")
    ap.add_argument("--sigma", type=float, default=0.12)
    ap.add_argument("--noise-space", default="pixel")
    ap.add_argument("--split-seed", type=int, default=1, help="1: images no stored run used (runs use 0)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=None, help="JSON file of every per-input array")
    ap.add_argument("--load", default=None, help="comma-separated JSON files to print instead of running")
    args = ap.parse_args(argv)
    arrays = {}
    if args.load:
        for f in args.load.split(","):
            arrays.update({k: np.asarray(v, np.float64) for k, v in json.loads(Path(f).read_text()).items()})
        return report(arrays)
    from ross_ood.attacks import eps_tensor
    from ross_ood.cli.jobs.common import clean_run
    from ross_ood.cli.settings import AttackSettings
    sets = args.ood.split(",")
    st = AttackSettings(out="runs/bench-strength", limit=args.limit, detectors=args.detectors, eps=args.eps,
                        eps_space=args.eps_space, noise_space=args.noise_space, model=args.model, sigma=args.sigma,
                        split_seed=args.split_seed, progress=False, bootstrap=0, device="cpu")
    run = clean_run(st)
    for s in list(run.bench.ood):
        if s not in sets:
            del run.bench.ood[s]
    run.bench.groups = {k: [s for s in v if s in sets] for k, v in run.bench.groups.items()}
    n_att = len(run.bench.id) + sum(len(run.bench.ood[s]) for s in sets)
    print(f"model {run.model_name}, sigma {args.sigma} {args.noise_space}, eps {args.eps}/255 {args.eps_space}, "
          f"split seed {args.split_seed}: {len(run.bench.id)} ID test + {' + '.join(str(len(run.bench.ood[s])) for s in sets)}"
          f" OOD ({', '.join(sets)}) images; torch threads {torch.get_num_threads()}", flush=True)
    for det_name, det in run.dets.items():
        clean = run.result.scores[det_name]
        arrays[f"{det_name}|clean|id_test"] = np.asarray(clean["id_test"]["score"], np.float64)
        for s in sets:
            arrays[f"{det_name}|clean|{s}"] = np.asarray(clean[s]["score"], np.float64)
        for cname in args.configs.split(",") if args.configs else []:
            budget, counter, t0 = CONFIGS[cname], PassCounter(run.model.net), time.perf_counter()
            try:
                per_plan = attack_benchmark(run.model, run.bench, {det_name: det}, {det_name: clean},
                                            eps_list=st.eps_values, objectives=["min", "max"], eps_space=st.eps_space,
                                            budget=budget, seed=st.seed, batch_size=args.batch, block_size=512,
                                            n_resamples=0).plan_scores
            finally:
                counter.close()
            wall = time.perf_counter() - t0
            for side, side_sets in (("min", ["id_test"]), ("max", sets)):
                for k, v in worst_per_input(per_plan, det_name, st.eps_values[0], side, side_sets).items():
                    arrays[f"{det_name}|{cname}|{k}"] = v
            for k, v in per_plan.items():
                arrays[f"{det_name}|{cname}/{k[4]}|{k[2]}"] = v
            arrays[f"{det_name}|{cname}|cost"] = np.array([counter.forward / n_att, counter.backward / n_att, wall])
            print(f"  {det_name} / {cname}: {wall:.0f} s", file=sys.stderr, flush=True)
            _save(args.out, arrays)
        if args.reference:
            t0 = time.perf_counter()
            eps_px = eps_tensor(run.model, st.eps_values[0], st.eps_space)
            counter = PassCounter(run.model.net)
            ref = reference_scores(run, det_name, det, eps_px, ["id_test"], "min", st.seed)
            ref.update(reference_scores(run, det_name, det, eps_px, sets, "max", st.seed))
            counter.close()
            for k, v in ref.items():
                arrays[f"{det_name}|reference|{k}"] = v
            arrays[f"{det_name}|reference|cost"] = np.array([counter.forward / n_att, counter.backward / n_att,
                                                             time.perf_counter() - t0])
            print(f"  {det_name} / reference: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            _save(args.out, arrays)
    return report(arrays)


def _save(path, arrays):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({k: np.asarray(v, np.float64).tolist() for k, v in arrays.items()}))


def report(arrays: dict) -> None:
    from ross_ood.metrics import paired_auroc_difference
    dets = sorted({k.split("|")[0] for k in arrays})
    for det in dets:
        rows = [c for c in dict.fromkeys(k.split("|")[1] for k in arrays if k.startswith(det + "|"))
                if "/" not in c and c != "clean"]
        sets = sorted({k.split("|")[2] for k in arrays if k.startswith(det + "|clean|")} - {"id_test"})
        clean_id = arrays[f"{det}|clean|id_test"]
        clean_ood = {s: arrays[f"{det}|clean|{s}"] for s in sets}

        def sides(c):
            return {"min": (arrays[f"{det}|{c}|id_test"], clean_ood),
                    "max": (clean_id, {s: arrays[f"{det}|{c}|{s}"] for s in sets}),
                    "both": (arrays[f"{det}|{c}|id_test"], {s: arrays[f"{det}|{c}|{s}"] for s in sets})}
        first = rows[0]
        print(f"\n{det}: {clean_id.size} ID test + {' + '.join(str(clean_ood[s].size) for s in sets)} OOD images "
              f"({', '.join(sets)}); AUROC % (mean over OOD sets); paired differences with 95% bootstrap intervals")
        print("| attack | fwd/img | bwd/img | wall s | PGD-Min | PGD-Max | PGD-Both | Both - reference | Both - " + first
              + " |\n|---|---|---|---|---|---|---|---|---|")
        for c in rows:
            cost = arrays.get(f"{det}|{c}|cost", [np.nan] * 3)
            sd = sides(c)
            cells = []
            for o in ("min", "max", "both"):
                cells.append(f"{_auroc(*sd[o]) * 100:.2f}")
            diffs = []
            for other in ("reference", first):
                if f"{det}|{other}|id_test" in arrays and other != c:
                    d = paired_auroc_difference(sd["both"], sides(other)["both"])["mean"]
                    diffs.append(f"{d['diff'] * 100:+.2f} [{d['lo'] * 100:+.2f}, {d['hi'] * 100:+.2f}]")
                else:
                    diffs.append("-")
            print(f"| {c} | {cost[0]:.0f} | {cost[1]:.0f} | {cost[2]:.0f} | " + " | ".join(cells) + " | "
                  + " | ".join(diffs) + " |")


def _auroc(id_s, ood: dict) -> float:
    from ross_ood.metrics import auroc_by_ranks
    return float(np.mean([auroc_by_ranks(np.asarray(id_s), np.asarray(v)) for v in ood.values()]))


if __name__ == "__main__":
    main()
