"""The robustness leaderboard (``results/robustness.md``), rendered from stored results only.

    ross leaderboard results/robustness/leaderboard.yaml     (or: python -m ross_ood.cli leaderboard ...)

The spec (YAML, read with ``safe_load``) names ``ross attack`` and ``ross certify`` results
files (``results.json``, paths relative to the spec) and the rows; every number in the table
is read from those files, so the page is re-rendered, never re-typed. Columns: clean AUROC;
worst-case AUROC (per input, the worst over the transfer and the adaptive attacks) for every
(eps, objective) of the attack file; certified AUROC at the L2 radii of the spec where the row
has a certificate; images per set; wall time of the runs. Each AUROC carries its 95%
bootstrap interval. Spec keys::

    title: ...
    intro: ...                 # markdown above the table
    attack: {name: path, ...}  # ross attack results
    certify: {name: path, ...} # ross certify results
    radii: [0.12, 0.25, 0.5]
    rows:
      - {label: ..., attack: name, detector: msp, certify: name, sigma: 0.12}
      - {label: ..., attack: [name500, name200], detector: ...}  # each attack column from the first run
                                 # that holds it (e.g. 2/255 at 500 per set, 8/255 at 200); clean: the first
    paired:                    # A - B on the same images (``ross compare``), worst case per input;
      - {a: name, a_detector: median-energy, b: name, b_detector: msp}   # two attack runs, or
      - {a: name, a_detector: median-energy, b: name, b_detector: median-react}  # two certify runs
    anchors: markdown          # published numbers, their own protocols (quoted, not computed)
    notes: markdown            # below the table
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ross_ood.attacks import OBJECTIVE_NAMES
from ross_ood.runs.tables import CI_NOTE
from ross_ood.validate import eps_label

__all__ = ["load_spec", "render_leaderboard", "write_leaderboard"]



def load_spec(path: str | Path) -> dict:
    """Read and check a leaderboard spec; every malformed part is refused naming its key."""
    p = Path(path)
    try:
        spec = yaml.safe_load(p.read_text())
    except OSError as e:
        raise FileNotFoundError(f"leaderboard spec {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(spec, dict) or "rows" not in spec:
        raise ValueError(f"{p}: a leaderboard spec needs a mapping with 'rows'")
    for key in ("attack", "certify"):
        v = spec.get(key)
        if v is not None and not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
            raise ValueError(f"{p}: '{key}' must map run names to results.json paths, got {type(v).__name__} {v!r}")
    rows = spec["rows"]
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{p}: 'rows' must be a non-empty list of rows, got {rows!r}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{p}: row {i + 1} must be a mapping with 'label' and 'detector', got {row!r}")
        missing = [k for k in ("label", "detector") if not isinstance(row.get(k), str) or not row.get(k)]
        if missing:
            raise ValueError(f"{p}: row {i + 1} ({row.get('label', 'no label')!r}) needs {' and '.join(missing)}")
        att = row.get("attack")
        if att is not None and not (isinstance(att, str) and att or isinstance(att, list) and att
                                    and all(isinstance(a, str) and a for a in att)):
            raise ValueError(f"{p}: row {row['label']!r}: attack must name an attack run or list attack runs, "
                             f"got {att!r}")
        if "sigma" in row and not isinstance(row["sigma"], (int, float)):
            raise ValueError(f"{p}: row {row['label']!r}: sigma must be a number, got {row['sigma']!r}")
    paired = spec.get("paired", [])
    if not isinstance(paired, list):
        raise ValueError(f"{p}: 'paired' must be a list of {{a, a_detector, b, b_detector}}, got {paired!r}")
    for i, pair in enumerate(paired):
        keys = ("a", "a_detector", "b", "b_detector")
        if not isinstance(pair, dict) or any(not isinstance(pair.get(k), str) or not pair.get(k) for k in keys):
            raise ValueError(f"{p}: paired entry {i + 1} needs a, a_detector, b and b_detector (attack run names "
                             f"and their detectors), got {pair!r}")
        kinds = []
        for k in ("a", "b"):
            found = [kind for kind in ("attack", "certify") if pair[k] in (spec.get(kind) or {})]
            if len(found) != 1:
                raise ValueError(f"{p}: paired entry {i + 1}: " + (
                    f"no attack or certify results named {pair[k]!r}" if not found else
                    f"{pair[k]!r} names both attack and certify results: rename one"))
            kinds += found
        if kinds[0] != kinds[1]:
            raise ValueError(f"{p}: paired entry {i + 1}: {pair['a']!r} is {kinds[0]} results and {pair['b']!r} "
                             f"{kinds[1]} results: a pair is two attack runs or two certify runs")
        pair["_kind"] = kinds[0]
    radii = spec.get("radii", [])
    if not isinstance(radii, list):
        raise ValueError(f"{p}: 'radii' must be a list of L2 radii, got {radii!r}")
    for r in radii:
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise ValueError(f"{p}: 'radii' must hold numbers (L2 radii in pixel units), got {r!r}")
    spec["_dir"] = p.parent
    return spec


def _auroc(rec: dict | None) -> str:
    if rec is None:
        return "-"
    lo, hi = rec.get("auroc_lo"), rec.get("auroc_hi")
    ci = "" if lo is None or hi is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{100 * rec['auroc']:.2f}{ci}"


def _read(spec: dict, kind: str) -> dict:
    docs = {}
    for name, rel in (spec.get(kind) or {}).items():
        path = spec["_dir"] / rel
        if not path.is_file():
            raise FileNotFoundError(f"leaderboard: {kind} results {name!r} not found at {path}")
        docs[name] = json.loads(path.read_text())
        if docs[name].get("command") != kind:
            raise ValueError(f"leaderboard: {path} holds {docs[name].get('command')!r} results, not {kind!r}")
    return docs


def _cert_record(doc: dict, det: str, row: dict, radius) -> dict | None:
    """The mean record of ``det`` at the row's sigma and ``radius`` ("clean" or a number)."""
    sigma = float(row.get("sigma", -1))

    def match(m):
        same_r = m["radius"] == "clean" if radius == "clean" else (
            m["radius"] != "clean" and abs(float(m["radius"]) - float(radius)) < 1e-12)
        return m["detector"] == det and same_r and abs(float(m["sigma"]) - sigma) < 1e-12
    return next((m for m in doc["means"] if match(m)), None)


def render_leaderboard(spec: dict) -> str:
    """The leaderboard page as markdown."""
    attacks, certs = _read(spec, "attack"), _read(spec, "certify")
    radii = [float(r) for r in spec.get("radii", [])]
    cols = []  # (eps, objective) over every attack file, in order
    for doc in attacks.values():
        for eps in doc["eps_list"]:
            for obj in ("min", "max", "both"):
                if any(m["objective"] == obj and m["eps"] == eps for m in doc["means"]) and (eps, obj) not in cols:
                    cols.append((eps, obj))
    spaces = {doc["eps_space"] for doc in attacks.values()}
    head = (["detector", "clean"] + [f"{eps_label(e)} {OBJECTIVE_NAMES[o]}" for e, o in cols]
            + [f"cert. L2 {r:g}" for r in radii] + ["images/set (attack / cert.)", "run"])
    lines = [f"# {spec.get('title', 'Robustness leaderboard')}", ""]
    if spec.get("intro"):
        lines += [spec["intro"].strip(), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in spec["rows"]:
        cells = [row["label"]]
        names = [row["attack"]] if isinstance(row.get("attack"), str) else list(row.get("attack") or [])
        for name in names:
            if name not in attacks:
                raise ValueError(f"leaderboard row {row['label']!r}: no attack results named {name!r}")
        det = row["detector"]
        clean = None
        for name in names:
            c = next((m for m in attacks[name]["clean_means"] if m["detector"] == det and m["ood_set"] == "all-mean"),
                     None)
            if c is None:
                raise ValueError(f"leaderboard row {row['label']!r}: detector {det!r} not in attack results {name!r}")
            clean = clean or c  # the first run's
        cdoc = certs.get(row.get("certify"))
        if clean is None and cdoc is not None:  # a certificate-only row: the clean metric of that run
            clean = _cert_record(cdoc, det, row, "clean")
        cells.append(_auroc(clean))
        used: dict = {}  # run name -> the attack columns it gave
        for eps, obj in cols:
            rec = None
            for name in names:  # the first run that holds the column
                rec = next((m for m in attacks[name]["means"] if m["detector"] == det and m["target"] == "worst"
                            and m["eps"] == eps and m["objective"] == obj), None)
                if rec is not None:
                    used.setdefault(name, []).append(eps)
                    break
            cells.append(_auroc(rec))
        if row.get("certify") and cdoc is None:
            raise ValueError(f"leaderboard row {row['label']!r}: no certify results named {row['certify']!r}")
        cells += [_auroc(None if cdoc is None else _cert_record(cdoc, det, row, r)) for r in radii]
        counts = [str(attacks[n]["set_sizes"].get("id_test", "-")) + (
            "" if len(used) < 2 else f" ({', '.join(dict.fromkeys(map(eps_label, used[n])))})")
            for n in names if n in used or len(names) == 1]
        counts += [str(cdoc["set_sizes"].get("id_test", "-"))] if cdoc is not None else []
        cells.append(" / ".join(counts) or "-")
        cells.append(", ".join(x for x in (*names, row.get("certify")) if x) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Attack columns: worst case per input over the transfer and adaptive attacks, eps in "
              f"{', '.join(sorted(spaces)) or '-'} units, AUROC % (mean over the OOD sets). {CI_NOTE}", ""]
    lines += ["Runs (stored results; wall time on the machine that ran them):", ""]
    for name, d in {**attacks, **certs}.items():
        sizes = ", ".join(f"{k} {v}" for k, v in d.get("set_sizes", {}).items())
        version = f"attack version {d['attack_version']}; " if "attack_version" in d else ""
        lines.append(f"- `{name}`: `ross {d['command']}` on {d.get('model') or d.get('models')}, {sizes}; "
                     f"{version}{d['wall_time_s'] / 60:.1f} min")
    for kind in ("attack", "certify"):
        pairs = [pair for pair in spec.get("paired", []) if pair["_kind"] == kind]
        if pairs:
            lines += ["", *_paired_section(spec, pairs, {**attacks, **certs}, kind, cols, radii)]
    for key in ("anchors", "notes"):
        if spec.get(key):
            lines += ["", spec[key].strip()]
    return "\n".join(lines) + "\n"


def _paired_section(spec: dict, pairs: list, docs: dict, kind: str, cols: list, radii: list) -> list[str]:
    """A - B per paired entry of one kind (``compare.compare_runs`` on the stored per-input numbers:
    the same images in both runs, else refused), mean over the OOD sets: attack pairs per attack
    column (worst case per input), certify pairs per radius (certified AUROC)."""
    from ross_ood.runs.compare import compare_runs
    if kind == "attack":
        target, keys = "worst", cols
        head = [f"{eps_label(e)} {OBJECTIVE_NAMES[o]}" for e, o in cols]
        what = "worst case per input"
    else:
        target, keys = "certified", [(r, "both") for r in radii]
        head = [f"cert. L2 {r:g}" for r in radii]
        what = "certified AUROC: each input's certified bound, abstentions ranked worst"
    head = ["A", "B", "images/set", "clean"] + head
    lines = [f"Paired differences of {kind} runs, A - B on the same images ({what}, mean over the OOD sets), "
             "with the 95% paired bootstrap interval over the images (`ross compare`); a difference whose "
             "interval holds 0 is not supported:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pair in pairs:
        dirs = [(spec["_dir"] / spec[kind][pair[k]]).parent for k in ("a", "b")]
        try:
            doc = compare_runs(dirs[0], dirs[1], pair["a_detector"], pair["b_detector"])
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"leaderboard paired entry {pair['a']} / {pair['b']}: {e}") from None
        recs = {(r["eps"], r["objective"]): r["diff"]["mean"] for r in doc["rows"]
                if r["target"] in (target, "clean")}

        def cell(key):
            d = recs.get(key)
            return "-" if d is None else f"{100 * d['diff']:+.2f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
        n = docs[pair["a"]]["set_sizes"].get("id_test", "-")
        lines.append("| " + " | ".join([f"{pair['a_detector']} ({pair['a']})", f"{pair['b_detector']} ({pair['b']})",
                                         str(n), cell(("clean", "clean"))] + [cell(c) for c in keys]) + " |")
    return lines


def write_leaderboard(spec_path: str | Path, out: str | Path | None = None) -> Path:
    """Render the spec and write the page to ``out`` (default: the spec's ``out``, relative to
    the spec); returns the path written."""
    spec = load_spec(spec_path)
    path = Path(out) if out is not None else spec["_dir"] / spec.get("out", "../robustness.md")
    path.write_text(render_leaderboard(spec))
    return path
