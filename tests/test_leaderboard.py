"""The robustness leaderboard is rendered from stored results only, and the committed page
is exactly what its spec renders."""
import json
import re
from pathlib import Path

import pytest
import yaml

from ross_ood import cli
from ross_ood.runs.leaderboard import load_spec, render_leaderboard

from .conftest import stored_arrays, write_stored_arrays

ROOT = Path(__file__).resolve().parents[1]


def _spec(tmp_path, rows, **extra):
    spec = {"title": "t", "attack": {"a": str(ROOT / "results/attacks/readme-robustness.results.json")},
            "certify": {"c": str(ROOT / "results/reproduce/certify-results.json")}, "radii": [0.1, 0.3], "rows": rows,
            **extra}
    p = tmp_path / "lb.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_cells_are_the_stored_records(tmp_path):
    p = _spec(tmp_path, [{"label": "MSP", "attack": "a", "detector": "msp"},
                         {"label": "median", "certify": "c", "detector": "median-fdbd", "sigma": 0.12}],
              anchors="ATD: 69.3 (their protocol)")
    md = render_leaderboard(load_spec(p))
    att = json.loads((ROOT / "results/attacks/readme-robustness.results.json").read_text())
    worst = next(m for m in att["means"] if m["detector"] == "msp" and m["target"] == "worst"
                 and m["objective"] == "both")
    cert = json.loads((ROOT / "results/reproduce/certify-results.json").read_text())
    c03 = next(m for m in cert["means"] if m["detector"] == "median-fdbd" and m["sigma"] == 0.12
               and m["radius"] == 0.3)
    msp_row = next(line for line in md.splitlines() if line.startswith("| MSP |")).split(" | ")
    med_row = next(line for line in md.splitlines() if line.startswith("| median |")).split(" | ")
    head = next(line for line in md.splitlines() if line.startswith("| detector |")).split(" | ")
    col = head.index("8/255 PGD-Both")
    assert msp_row[col] == f"{100 * worst['auroc']:.2f} [{100 * worst['auroc_lo']:.1f}, {100 * worst['auroc_hi']:.1f}]"
    assert med_row[head.index("cert. L2 0.3")] == f"{100 * c03['auroc']:.2f}"  # that file predates intervals
    assert msp_row[head.index("cert. L2 0.3")] == "-" and med_row[col] == "-"
    assert "ATD: 69.3" in md


def test_a_row_takes_each_attack_column_from_the_first_run_that_holds_it(tmp_path):
    """A row's 2/255 cells from a bigger run that attacked only 2/255, its 8/255 cells from the
    run that holds them; the images cell says which run gave which budget."""
    att = json.loads((ROOT / "results/attacks/readme-robustness.results.json").read_text())
    two = 2 / 255
    big = {**att, "eps_list": [two], "set_sizes": {**att["set_sizes"], "id_test": 500},
           "means": [{**m, "eps": two, "auroc": 0.5, "auroc_lo": 0.25, "auroc_hi": 0.75}
                     for m in att["means"] if m["objective"] == "both"],
           "clean_means": [{**m, "auroc": 0.875, "auroc_lo": 0.75, "auroc_hi": 1.0} for m in att["clean_means"]]}
    (tmp_path / "big.json").write_text(json.dumps(big))
    p = _spec(tmp_path, [{"label": "both", "attack": ["big", "a"], "detector": "msp"},
                         {"label": "one", "attack": "a", "detector": "msp"}])
    spec = yaml.safe_load(p.read_text())
    spec["attack"]["big"] = str(tmp_path / "big.json")
    p.write_text(yaml.safe_dump(spec))
    md = render_leaderboard(load_spec(p))
    head = next(line for line in md.splitlines() if line.startswith("| detector |")).split(" | ")
    row = next(line for line in md.splitlines() if line.startswith("| both |")).split(" | ")
    one = next(line for line in md.splitlines() if line.startswith("| one |")).split(" | ")
    assert row[head.index("clean")] == "87.50 [75.0, 100.0]"  # the first run's clean metric
    assert row[head.index("2/255 PGD-Both")] == "50.00 [25.0, 75.0]" and one[head.index("2/255 PGD-Both")] == "-"
    for col in ("8/255 PGD-Min", "8/255 PGD-Both"):
        assert row[head.index(col)] == one[head.index(col)] != "-"
    assert row[head.index("images/set (attack / cert.)")] == "500 (2/255) / 100 (8/255)"
    assert one[head.index("images/set (attack / cert.)")] == "100"
    p2 = _spec(tmp_path, [{"label": "x", "attack": ["a", 3], "detector": "msp"}])
    with pytest.raises(ValueError, match="attack must name an attack run or list attack runs"):
        load_spec(p2)


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="detector 'nope' not in attack results"):
        render_leaderboard(load_spec(_spec(tmp_path, [{"label": "x", "attack": "a", "detector": "nope"}])))
    with pytest.raises(ValueError, match="no attack results named 'b'"):
        render_leaderboard(load_spec(_spec(tmp_path, [{"label": "x", "attack": "b", "detector": "msp"}])))
    p = tmp_path / "bad.yaml"
    p.write_text("attack: {}\n")
    with pytest.raises(ValueError, match="needs a mapping with 'rows'"):
        load_spec(p)
    spec = load_spec(_spec(tmp_path, [{"label": "x", "attack": "a", "detector": "msp"}]))
    spec["attack"]["a"] = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="attack results 'a' not found"):
        render_leaderboard(spec)


@pytest.mark.parametrize("spec_name,page", [("leaderboard.yaml", "robustness.md"), ("leaderboard-jpeg.yaml", "robustness-jpeg.md"),
                                            ("leaderboard-v3.yaml", "robustness-v3.md")])
def test_committed_leaderboard_is_its_render(spec_name, page):
    spec_path = ROOT / "docs" / "robustness" / spec_name
    if not spec_path.exists():
        pytest.skip("no committed leaderboard")
    spec = load_spec(spec_path)
    assert (ROOT / "docs" / page).read_text() == render_leaderboard(spec)


def test_cli_writes_the_page(tmp_path):
    p = _spec(tmp_path, [{"label": "MSP", "attack": "a", "detector": "msp"}])
    assert cli.main(["leaderboard", str(p), str(tmp_path / "out.md")]) == 0
    assert (tmp_path / "out.md").read_text() == render_leaderboard(load_spec(p))


def test_leaderboard_module_does_not_import_the_cli():
    """The package's one import cycle (cli <-> leaderboard) stays broken."""
    import ast
    src = (ROOT / "src" / "ross_ood" / "runs" / "leaderboard.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    assert "cli" not in imported and "ross_ood.cli" not in imported


@pytest.mark.parametrize("text,message", [
    ("rows: [\n", "not valid YAML (line 2"),
    ("rows: 5\n", "'rows' must be a non-empty list"),
    ("rows: [MSP, median]\n", "row 1 must be a mapping"),
    ("rows: [{label: x}]\n", "row 1 ('x') needs detector"),
    ("rows: [{detector: msp}]\n", "row 1 ('no label') needs label"),
    ("attack: [a.json]\nrows: [{label: x, detector: msp}]\n", "'attack' must map run names"),
    ("radii: [abc]\nrows: [{label: x, detector: msp}]\n", "'radii' must hold numbers (L2 radii in pixel units), got 'abc'"),
])
def test_malformed_specs_get_one_line(tmp_path, capsys, text, message):
    p = tmp_path / "lb.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_spec(p)
    assert cli.main(["leaderboard", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ross leaderboard: error:") and len(err.strip().splitlines()) == 1


def _lb_scores(run, det, eps, side_target):
    """Per-input scores of a stored run, read independently of ross_ood.runs.compare."""
    d = ROOT / "results/robustness/lb" / run
    raw = stored_arrays(d)
    return lambda side, s: raw[f"{det}|clean|{s}" if eps == "clean" or side is None
                               else f"{det}|{eps!r}|{side}|{s}|{side_target}"]


def test_paired_section_is_the_difference_on_the_same_images(tmp_path):
    """The paired cells are AUROC(A) - AUROC(B) recomputed here with scikit-learn from the stored
    per-input scores (PGD-Both: attacked ID vs attacked OOD), inside their own interval; runs on
    other images are refused by name."""
    import numpy as np
    from sklearn.metrics import roc_auc_score
    lb = ROOT / "results/robustness/lb"
    if not (lb / "std-msp-p1").is_dir() or not (lb / "e52-median-energy-p1").is_dir():
        pytest.skip("stored leaderboard runs absent")
    spec = {"attack": {"e": str(lb / "e52-median-energy-p1/results.json"), "m": str(lb / "std-msp-p1/results.json"),
                       "m5": str(lb / "std-msp/results.json")},
            "rows": [{"label": "x", "attack": "e", "detector": "median-energy"}],
            "paired": [{"a": "e", "a_detector": "median-energy", "b": "m", "b_detector": "msp"}]}
    p = tmp_path / "lb.yaml"
    p.write_text(yaml.safe_dump(spec))
    md = render_leaderboard(load_spec(p))
    head = next(line for line in md.splitlines() if line.startswith("| A | B |")).split(" | ")
    row = next(line for line in md.splitlines() if line.startswith("| median-energy (e) |")).split(" | ")
    res = json.loads((lb / "e52-median-energy-p1/results.json").read_text())
    eps = next(e for e in res["eps_list"] if abs(e * 255 - 2) < 1e-6)

    def both(run, det):
        get = _lb_scores(run, det, eps, "worst")
        return np.mean([roc_auc_score(np.r_[np.zeros(len(get("min", "id_test"))), np.ones(len(get("max", s)))],
                                      -np.r_[get("min", "id_test"), get("max", s)]) for s in ("cifar100", "tin")])
    want = 100 * (both("e52-median-energy-p1", "median-energy") - both("std-msp-p1", "msp"))
    cell = row[head.index("2/255 PGD-Both")]
    got, lo, hi = (float(v) for v in re.match(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", cell).groups())
    assert got == pytest.approx(want, abs=0.006) and lo <= got <= hi and want > 10
    spec["paired"] = [{"a": "e", "a_detector": "median-energy", "b": "m5", "b_detector": "msp"}]
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="paired entry e / m5: .*not run on the same images"):
        render_leaderboard(load_spec(p))
    spec["paired"] = [{"a": "e", "a_detector": "median-energy", "b": "zz", "b_detector": "msp"}]
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="paired entry 1: no attack or certify results named 'zz'"):
        load_spec(p)


def test_two_runs_pair_on_the_sets_both_hold(tmp_path):
    """A run that holds only some of the OOD sets (one arm of a cost measurement) pairs with a full
    run on those sets: the difference is the one recomputed with scikit-learn on that set alone;
    a changed ID image set is still refused."""
    import shutil

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from ross_ood.runs.compare import compare_runs
    lb = ROOT / "results/robustness/lb"
    if not (lb / "std-msp-p1").is_dir() or not (lb / "e52-median-energy-p1").is_dir():
        pytest.skip("stored leaderboard runs absent")
    sub = tmp_path / "msp-c100"
    shutil.copytree(lb / "std-msp-p1", sub)
    doc = json.loads((sub / "results.json").read_text())
    for key in ("set_fingerprints", "set_sizes"):
        doc[key].pop("tin")
    (sub / "results.json").write_text(json.dumps(doc))
    raw = stored_arrays(sub)
    write_stored_arrays(sub, {k: v for k, v in raw.items() if "|tin" not in k})
    out = compare_runs(lb / "e52-median-energy-p1", sub, "median-energy", "msp")
    assert out["ood_sets"] == ["cifar100"]
    (row,) = [r for r in out["rows"] if r["eps"] == "clean"]
    ea, eb = _lb_scores("e52-median-energy-p1", "median-energy", "clean", None), _lb_scores("std-msp-p1", "msp", "clean", None)

    def auc(get):
        i, o = get(None, "id_test"), get(None, "cifar100")
        return roc_auc_score(np.r_[np.ones(len(i)), np.zeros(len(o))], np.r_[i, o])
    assert row["diff"]["mean"]["diff"] == pytest.approx(auc(ea) - auc(eb), abs=1e-12)
    doc["set_fingerprints"]["id_test"] = "other"
    (sub / "results.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not run on the same images"):
        compare_runs(lb / "e52-median-energy-p1", sub, "median-energy", "msp")


def test_paired_certificates_are_the_difference_of_certified_aurocs(tmp_path):
    """Two certify runs on the same images pair per radius: the cell is certified AUROC(A) -
    certified AUROC(B) recomputed here with scikit-learn from the stored bounds (ID lower vs OOD
    upper, abstentions set below / above everything), inside its interval; a certify run beside an
    attack run, in a spec or in ``ross compare``, is refused by name."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from ross_ood.runs.compare import compare_runs
    lb = ROOT / "results/robustness/lb"
    runs = ("certify-e54adv-p1", "certify-e54tinoe-p1")
    if not all((lb / r).is_dir() for r in runs) or not (lb / "e54adv-median-energy-p1").is_dir():
        pytest.skip("stored leaderboard runs absent")
    spec = {"certify": {"a": str(lb / runs[0] / "results.json"), "t": str(lb / runs[1] / "results.json")},
            "attack": {"e": str(lb / "e54adv-median-energy-p1/results.json")}, "radii": [0.12, 0.25],
            "rows": [{"label": "x", "attack": "e", "detector": "median-energy", "certify": "a", "sigma": 0.12}],
            "paired": [{"a": "a", "a_detector": "median-energy", "b": "t", "b_detector": "median-energy"},
                       {"a": "a", "a_detector": "median-energy", "b": "a", "b_detector": "median-react"}]}
    p = tmp_path / "lb.yaml"
    p.write_text(yaml.safe_dump(spec))
    md = render_leaderboard(load_spec(p)).splitlines()
    head = next(line for line in md if line.startswith("| A | B |") and "cert. L2" in line).rstrip(" |").split(" | ")

    def certified(run, det, radius):
        raw = stored_arrays(lb / run, "certified_bounds")
        get = lambda s: np.clip(np.asarray(raw[f"{det}|0.12|{radius!r}|{s}"], float), -1e12, 1e12)  # noqa: E731
        i = get("id_test")
        return np.mean([roc_auc_score(np.r_[np.ones(len(i)), np.zeros(len(get(s)))], np.r_[i, get(s)])
                        for s in ("cifar100", "tin")])
    for label, (ra, da), (rb, db) in (("| median-energy (a) | median-energy (t) |", (runs[0], "median-energy"), (runs[1], "median-energy")),
                                      ("| median-energy (a) | median-react (a) |", (runs[0], "median-energy"), (runs[0], "median-react"))):
        row = next(line for line in md if line.startswith(label)).rstrip(" |").split(" | ")
        for radius in (0.12, 0.25):
            want = 100 * (certified(ra, da, radius) - certified(rb, db, radius))
            got, lo, hi = (float(v) for v in re.match(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]",
                                                      row[head.index(f"cert. L2 {radius:g}")]).groups())
            assert got == pytest.approx(want, abs=0.006) and lo <= got <= hi
    assert abs(want) > 1  # median-energy and median-react differ at L2 0.25: the test compares numbers, not zeros
    spec["paired"] = [{"a": "a", "a_detector": "median-energy", "b": "e", "b_detector": "median-energy"}]
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="'a' is certify results and 'e' attack results"):
        load_spec(p)
    with pytest.raises(ValueError, match="a certify run pairs only with another certify run"):
        compare_runs(lb / runs[0], lb / "e54adv-median-energy-p1", "median-energy", "median-energy")
