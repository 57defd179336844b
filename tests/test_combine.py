"""A run in pieces (--part K/M) combined by ``ross combine`` equals the same run in one go:
the same per-input scores, metrics and intervals; pieces that are not parts of one run are refused."""
import json

import numpy as np
import pytest

from ross_ood import cli
from ross_ood.runs.combine import combine_runs

from .conftest import DATA_ROOT, need_data, stored_arrays

COMMON = ["--benchmark", "cifar10-jpeg", "--model", "resnet20", "--detectors", "msp,median-energy", "-N", "3",
          "--sigma", "0.1", "--limit", "12", "--ood-sets", "tin", "--no-progress", "--device", "cpu",
          "--data-root", str(DATA_ROOT), "--bootstrap", "200"]
ATTACK = ["--eps", "2", "--target", "transfer,worst", "--transfer-steps", "2", "--adaptive-steps", "2",
          "--restarts", "1", "--eotpgd-steps", "0", "--attack-n", "2", "--square-queries", "10"]


def _run(tmp_path, cmd, name, *extra):
    out = tmp_path / name
    assert cli.main([cmd, *COMMON, *(ATTACK if cmd == "attack" else []), "--out", str(out), *extra]) == 0
    return out


def _scores(d):
    return stored_arrays(d)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", ["eval", "attack"])
def test_pieces_combine_to_the_whole_run(tmp_path, cmd):
    need_data("cifar10", "test.zip")
    whole = _run(tmp_path, cmd, "whole")
    parts = [_run(tmp_path, cmd, f"p{k}", "--part", f"{k}/3") for k in (1, 2, 3)]
    doc = combine_runs(parts[::-1], tmp_path / "combined")  # any order
    ref = json.loads((whole / "results.json").read_text())
    assert doc["set_sizes"] == ref["set_sizes"]
    a, b = _scores(tmp_path / "combined"), _scores(whole)
    assert set(a) == set(b)
    for k in a:  # the same images: the same multiset of per-input scores (pieces interleave the order)
        np.testing.assert_allclose(np.sort(a[k]), np.sort(b[k]), rtol=0, atol=1e-12, err_msg=k)
    key = "means"
    for r, q in zip(doc[key], ref[key]):
        assert {k: r[k] for k in ("detector", "ood_set")} == {k: q[k] for k in ("detector", "ood_set")}
        assert r["auroc"] == pytest.approx(q["auroc"], abs=1e-12) and r["fpr95"] == pytest.approx(q["fpr95"], abs=1e-12)
    assert (tmp_path / "combined" / "results.md").read_text().count("|") > 10


def test_pieces_that_do_not_belong_together_are_refused(tmp_path, capsys):
    need_data("cifar10", "test.zip")
    p1 = _run(tmp_path, "eval", "p1", "--part", "1/2")
    p2 = _run(tmp_path, "eval", "p2", "--part", "2/2")
    other = _run(tmp_path, "eval", "o2", "--part", "2/2", "--seed", "1")
    again = _run(tmp_path, "eval", "a1", "--part", "1/2", "--batch-size", "4")
    three = _run(tmp_path, "eval", "t2", "--part", "2/3")
    whole = _run(tmp_path, "eval", "w")
    for runs, message in (([p1, other], r"other settings \(seed\)"), ([p1, again], "both part 1/2"),
                          ([p1, three], "parts of different splits"), ([p1, whole], "was not run as a part"),
                          ([p1], "at least two pieces")):
        with pytest.raises(ValueError, match=message):
            combine_runs(runs, tmp_path / "c")
    assert cli.main(["combine", str(tmp_path / "c"), str(p1), str(other)]) == 2
    assert "other settings (seed)" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    combine_runs([p1, p2], tmp_path / "ok")  # the right pieces combine


@pytest.mark.slow
def test_a_piece_written_before_a_setting_existed_combines_at_its_default(tmp_path):
    """A stored piece whose config lacks a setting added since (here apgd_judge_every, whose default
    1 is the old behaviour) ran at that default: it combines with a new piece at the default, and a
    piece with the setting changed is refused by its name."""
    need_data("cifar10", "test.zip")
    p1 = _run(tmp_path, "attack", "p1", "--part", "1/2")
    p2 = _run(tmp_path, "attack", "p2", "--part", "2/2")
    changed = _run(tmp_path, "attack", "c2", "--part", "2/2", "--apgd-judge-every", "2")
    doc = json.loads((p1 / "results.json").read_text())
    assert doc["config"].pop("apgd_judge_every") == 1
    (p1 / "results.json").write_text(json.dumps(doc))
    from ross_ood.cli.settings import command_defaults
    with pytest.raises(ValueError, match=r"other settings \(apgd_judge_every\)"):  # no defaults given: the key differs
        combine_runs([p1, p2], tmp_path / "plain")
    assert combine_runs([p1, p2], tmp_path / "ok", defaults=command_defaults())["set_sizes"]["tin"] == 12
    with pytest.raises(ValueError, match=r"other settings \(apgd_judge_every\)"):
        combine_runs([p1, changed], tmp_path / "no", defaults=command_defaults())


@pytest.mark.slow
def test_attack_pieces_with_other_eps_lists_combine_at_the_budgets_they_share(tmp_path, capsys):
    """2/255 grown in more pieces than 8/255: the part run at eps 2 alone gives the very scores the
    whole run at eps 2,8 gives its images (each budget is attacked on its own), and the combined
    table at eps 2 equals the whole run's 2/255 table."""
    need_data("cifar10", "test.zip")
    whole = _run(tmp_path, "attack", "whole", "--eps", "2,8")
    p1 = _run(tmp_path, "attack", "p1", "--part", "1/2", "--eps", "2,8")
    p2 = _run(tmp_path, "attack", "p2", "--part", "2/2", "--eps", "2")
    with pytest.raises(ValueError, match=r"other settings \(eps\).*combine at the budgets they share with --eps "
                                         r"\(2/255\)"):
        combine_runs([p1, p2], tmp_path / "c")
    with pytest.raises(ValueError, match=r"p2 holds no attack at eps 8/255 \(it holds 2/255\)"):
        combine_runs([p1, p2], tmp_path / "c", eps="2,8")
    assert cli.main(["combine", str(tmp_path / "c"), str(p1), str(p2), "--eps", "8"]) == 2
    assert "holds no attack at eps 8/255" in capsys.readouterr().err and not (tmp_path / "c").exists()
    doc = combine_runs([p2, p1], tmp_path / "c", eps="2/255")
    ref = json.loads((whole / "results.json").read_text())
    two = 2 / 255
    assert doc["eps_list"] == [two] and {r["eps"] for r in doc["means"]} == {two}
    assert doc["config"]["eps"] == ["2/255"] and "at eps 2/255 only" in doc["notes"][-1]
    a, b = _scores(tmp_path / "c"), _scores(whole)
    assert set(a) == {k for k in b if k.split("|")[1] in ("clean", str(two))}
    for k in a:
        np.testing.assert_allclose(np.sort(a[k]), np.sort(b[k]), rtol=0, atol=1e-12, err_msg=k)
    want = [q for q in ref["means"] if q["eps"] == two]
    assert len(doc["means"]) == len(want) > 0
    for r, q in zip(doc["means"], want):
        assert (r["detector"], r["objective"], r["target"]) == (q["detector"], q["objective"], q["target"])
        assert r["auroc"] == pytest.approx(q["auroc"], abs=1e-12)  # (intervals: the pieces interleave the order)
    e1 = _run(tmp_path, "eval", "e1", "--part", "1/2")
    e2 = _run(tmp_path, "eval", "e2", "--part", "2/2")
    with pytest.raises(ValueError, match="eps selects attack budgets, but the pieces hold ross eval"):
        combine_runs([e1, e2], tmp_path / "e", eps="2")


def test_part_is_checked():
    from ross_ood.validate import parse_part
    for bad in ("3/2", "0/2", "1/1", "a/b", "2"):
        with pytest.raises(ValueError, match="part must be K/M"):
            parse_part(bad)
    assert parse_part("2/5") == (2, 5)


CERTIFY = ["certify", "--benchmark", "cifar10-jpeg", "--model", "resnet20-noise012", "--detectors",
           "median-energy,ross-msp", "-N", "40", "--sigma", "0.12", "--radii", "0,0.1", "--alpha", "0.01",
           "--limit", "9", "--ood-sets", "tin", "--no-progress", "--device", "cpu", "--data-root", str(DATA_ROOT),
           "--bootstrap", "200"]


@pytest.mark.slow
def test_certify_pieces_combine_to_the_whole_run(tmp_path):
    """Certificates in parts: the per-input bounds of the pieces are the whole run's (the same
    multiset per cell), and every certified metric recomputed from them equals the whole run's."""
    need_data("cifar10", "test.zip")
    from ross_ood.runs.rundir import load_bounds

    def run(name, *extra):
        assert cli.main([*CERTIFY, "--out", str(tmp_path / name), *extra]) == 0
        return tmp_path / name
    whole = run("whole")
    parts = [run(f"p{k}", "--part", f"{k}/3") for k in (1, 2, 3)]
    # stored as the docs store runs (no cache), then combined from the stored copies
    import subprocess
    from pathlib import Path
    stored = [tmp_path / "stored" / p.name for p in parts]
    for p, d in zip(parts, stored):
        subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "scripts" / "store_run.sh"), str(p), str(d)], check=True, capture_output=True)
    assert (stored[0] / "certified_bounds.npz").is_file() and not (stored[0] / "cache").exists()
    assert cli.main(["combine", str(tmp_path / "combined"), *map(str, stored[::-1])]) == 0
    doc = json.loads((tmp_path / "combined" / "results.json").read_text())
    ref = json.loads((whole / "results.json").read_text())
    assert doc["set_sizes"] == ref["set_sizes"] and doc["set_sizes"]["id_val"] > 0  # ross-msp calibrates
    a, b = load_bounds(tmp_path / "combined"), load_bounds(whole)
    assert set(a) == set(b) and any(k[2] == 0.1 for k in a)
    for k in a:
        np.testing.assert_array_equal(np.sort(a[k]), np.sort(b[k]), err_msg=str(k))
    got = {(r["detector"], r["radius"], r["ood_set"]): r for r in doc["results"] + doc["means"]}
    want = {(r["detector"], r["radius"], r["ood_set"]): r for r in ref["results"] + ref["means"]}
    assert set(got) == set(want) and len(got) == 2 * 3 * 2
    for k, r in want.items():
        for m in ("auroc", "fpr95", "abstain_id", "abstain_ood"):
            assert got[k][m] == pytest.approx(r[m], abs=1e-12), (k, m)
    # the classifier's accuracy, clean and under the noise (drawn per image's pixels): the parts' add up to the whole's
    acc, whole_acc = doc["id_accuracy"]["0.12"], ref["id_accuracy"]["0.12"]
    assert acc["n"] == whole_acc["n"] == ref["set_sizes"]["id_test"] and 0 < whole_acc["noisy"] <= 1
    assert acc["clean"] == pytest.approx(whole_acc["clean"], abs=1e-12)
    assert acc["noisy"] == pytest.approx(whole_acc["noisy"], abs=1e-12)
    assert "under sigma 0.12 noise" in (tmp_path / "combined" / "results.md").read_text()
    # median-only certificates calibrate nothing: no noise samples are spent on the ID validation split
    only = tmp_path / "median-only"
    assert cli.main([*CERTIFY, "--detectors", "median-energy", "--out", str(only)]) == 0
    mdoc = json.loads((only / "results.json").read_text())
    assert "id_val" not in mdoc["set_sizes"] and not (only / "cache" / "id_val").exists()
    mine = {(r["radius"], r["ood_set"]): r["auroc"] for r in mdoc["means"] + mdoc["results"]}
    assert mine == {(k[1], k[2]): r["auroc"] for k, r in want.items() if k[0] == "median-energy"}
    # a certify piece and an eval piece are not one table
    ev = tmp_path / "ev1"
    assert cli.main(["eval", *COMMON, "--out", str(ev), "--part", "1/3"]) == 0
    with pytest.raises(ValueError, match="different commands"):
        combine_runs([parts[0], ev], tmp_path / "bad")


@pytest.mark.slow
def test_lb_queue_runs_parts_stores_them_and_they_combine(tmp_path):
    """scripts/lb_queue.sh (the CPU queue of leaderboard parts) at a tiny size: two parts of the MSP
    row run two at a time, each is stored with its per-input scores, and the stored copies combine
    into the 4-per-set run whose per-input scores are the parts' together; a malformed job and a
    part that fails are refused / reported, and a failed part stores nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    need_data("cifar10-png", "test.zip")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ROSS_DATA": str(DATA_ROOT), "LB_RUNS": str(tmp_path / "runs"),
           "LB_STORE": str(tmp_path / "store"), "ROSS": str(Path(sys.executable).parent / "ross")}
    tiny = ["--limit", "10", "--eps", "2", "--transfer-steps", "2", "--adaptive-steps", "2", "--restarts", "1",
            "--eotpgd-steps", "2", "--bootstrap", "50", "--no-progress"]

    def queue(*args):
        return subprocess.run([str(root / "scripts/lb_queue.sh"), *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)
    r = queue("-j", "2", "std-msp:1/5", "std-msp:2/5", "std-msp:1/5@8", "--", *tiny)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    store = tmp_path / "store"
    assert sorted(p.name for p in store.iterdir()) == ["std-msp-8-p1", "std-msp-p1", "std-msp-p2"]
    # NAME:K/M@EPS: the same part at that budget alone (after the extra flags' --eps 2), stored beside it
    import yaml
    assert yaml.safe_load((store / "std-msp-8-p1" / "config.yaml").read_text())["eps"] == ["8"]
    assert yaml.safe_load((store / "std-msp-p1" / "config.yaml").read_text())["eps"] == ["2"]
    assert not any((store / "std-msp-p1").glob("cache*"))
    doc = combine_runs([store / "std-msp-p1", store / "std-msp-p2"], tmp_path / "combined")
    assert {k: doc["set_sizes"][k] for k in ("id_test", "cifar100", "tin")} == {"id_test": 4, "cifar100": 4, "tin": 4}
    joined = _scores(tmp_path / "combined")
    for k, v in joined.items():
        parts = [list(stored_arrays(store / p)[k]) for p in ("std-msp-p1", "std-msp-p2")]
        if k.startswith("msp|clean|id_val"):
            continue  # the calibration split is shared by every part, not split
        np.testing.assert_allclose(np.sort(v), np.sort(parts[0] + parts[1]), rtol=0, atol=1e-12, err_msg=k)
    for bad in ("std-msp:1", "std-msp:1/5@", "certify/e52:1/5@8"):
        r = queue(bad)
        assert r.returncode == 2 and "is not NAME:K/M" in r.stderr, bad
    r = queue("std-msp:3/5", "--", *tiny, "--eps", "-1")
    assert r.returncode != 0 and "FAILED std-msp:3/5" in r.stdout and not (store / "std-msp-p3").exists()
