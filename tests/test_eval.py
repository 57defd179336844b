"""`ross eval` end to end on the real offline benchmark (small subset): schema, caching, resume."""
import json

import numpy as np
import pytest

from ross_ood import cli
from ross_ood.cli.jobs import run_eval
from ross_ood.cli.settings import EvalSettings
from ross_ood.engine import evaluate

from .conftest import DATA_ROOT, need_data

DETS = "msp,energy,fdbd,pro-fdbd,ross-msp,median-fdbd"


def _cfg(out, **kw):
    cfg = dict(data_root=str(DATA_ROOT), out=str(out), limit=24, n_samples=5, detectors=DETS,
               block_size=16, batch_size=8, progress=False, device="cpu")
    cfg.update(kw)
    return EvalSettings(**cfg)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    need_data("cifar10-png", "test.zip")
    out = tmp_path_factory.mktemp("eval")
    return out, run_eval(_cfg(out))


@pytest.mark.slow
def test_results_schema(first_run):
    out, doc = first_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["id_accuracy"] == doc["id_accuracy"]
    assert 0 <= doc["id_accuracy"] <= 1
    for k in ("config", "seed", "data_root", "noise_space", "versions", "results", "means", "set_sizes"):
        assert k in on_disk, k
    assert on_disk["versions"]["torch"]
    import torch  # the CPU the numbers came from (bf16 attack steps differ across CPUs)
    assert on_disk["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(on_disk["versions"]["cpu_bf16"]) <= {"amx_bf16", "avx512_bf16"}
    recs = on_disk["results"]
    assert {r["detector"] for r in recs} == set(DETS.split(","))
    assert {r["ood_set"] for r in recs} == {"cifar100", "tin", "mnist", "fashion-mnist"}
    assert {(r["ood_set"], r["group"]) for r in recs} == {("cifar100", "near"), ("tin", "near"), ("mnist", "far"),
                                                          ("fashion-mnist", "far")}
    assert on_disk["benchmark"] == "cifar10" and on_disk["model"] == "resnet20-original"
    for r in recs:
        for k in ("auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out"):
            assert 0.0 <= r[k] <= 1.0
    assert on_disk["set_sizes"] == {"id_val": 24, "id_test": 24, "cifar100": 24, "tin": 24, "mnist": 24,
                                    "fashion-mnist": 24}
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["detector", "ood_set", "group", "auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out"]
    md = (out / "results.md").read_text()
    assert "| ross-msp |" in md and "--limit 24" in md
    assert (out / "config.yaml").is_file()


def test_metrics_recomputed_from_scores_match(first_run):
    """results.json agrees with metrics recomputed from the stored per-set scores."""
    from ross_ood import ood_metrics
    out, doc = first_run
    z = np.load(out / "scores.npz")
    for r in doc["results"]:
        m = ood_metrics(z[f"{r['detector']}|id_test|score"], z[f"{r['detector']}|{r['ood_set']}|score"])
        assert m["auroc"] == pytest.approx(r["auroc"], abs=1e-12)


def test_rerun_is_cached_and_identical(first_run, monkeypatch):
    out, doc = first_run
    calls = []
    real = evaluate.unit_arrays
    monkeypatch.setattr(evaluate, "unit_arrays", lambda *a: calls.append(1) or real(*a))
    again = run_eval(_cfg(out))
    assert calls == []  # nothing recomputed
    assert again["results"] == doc["results"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_results(first_run, tmp_path, monkeypatch):
    _, doc = first_run
    real = evaluate.unit_arrays
    count = {"n": 0}

    def flaky(*a):
        count["n"] += 1
        if count["n"] == 9:
            raise KeyboardInterrupt("killed")
        return real(*a)

    monkeypatch.setattr(evaluate, "unit_arrays", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_cfg(tmp_path))
    done_before = count["n"] - 1
    count["n"] = -10 ** 9  # no more interruptions
    resumed = run_eval(_cfg(tmp_path))
    redone = count["n"] + 10 ** 9
    assert resumed["results"] == doc["results"]
    # 6 sets x 3 batches of 8 = 18 batches; the finished blocks (2 batches each) were not redone
    assert done_before + redone <= 18 + 1


def test_cli_errors_are_clear(capsys, tmp_path):
    assert cli.main(["eval", "--benchmark", "nope", "--out", str(tmp_path)]) == 2
    assert "benchmark must be one of" in capsys.readouterr().err
    assert cli.main(["eval", "--detectors", "msp,foo", "--out", str(tmp_path), "--limit", "4"]) == 2
    assert "unknown detector 'foo'" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_cli_pairs_two_detectors_and_refuses_other_images(tmp_path, capsys):
    """``ross compare`` on an eval run: A - B equals the difference of the two rows' mean AUROCs
    in results.json, its interval contains it; a run on other images is refused by name."""
    need_data("cifar10", "test.zip")
    import json

    from ross_ood import cli
    from ross_ood.runs.compare import compare_runs
    common = ["--data-root", str(DATA_ROOT), "--detectors", "msp,energy", "--no-progress", "--device", "cpu",
              "--ood", "tin=" + str(DATA_ROOT / "tinyimagenet32" / "val.zip"), "--only-extra", "--bootstrap", "100"]
    assert cli.main(["eval", "--out", str(tmp_path / "a"), "--limit", "30", *common]) == 0
    assert cli.main(["eval", "--out", str(tmp_path / "b"), "--limit", "40", *common]) == 0
    capsys.readouterr()
    doc = compare_runs(tmp_path / "a", None, "energy", "msp")
    (row,) = doc["rows"]
    means = {m["detector"]: m["auroc"] for m in json.loads((tmp_path / "a" / "results.json").read_text())["means"]}
    assert row["diff"]["mean"]["diff"] == pytest.approx(means["energy"] - means["msp"], abs=1e-12)
    assert row["diff"]["mean"]["lo"] <= row["diff"]["mean"]["diff"] <= row["diff"]["mean"]["hi"]
    assert cli.main(["compare", str(tmp_path / "a"), "--a", "energy", "--b", "msp"]) == 0
    assert "| energy | msp | clean | clean |" in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "not run on the same images" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path / "a"), "--a", "odin", "--b", "msp"]) == 2
    assert "detector 'odin' is not in" in capsys.readouterr().err
    # a run stored in the older text form (input_scores.json, gzip'd): the same comparison
    import gzip
    import json

    from .conftest import stored_arrays
    flat = {k: v.tolist() for k, v in stored_arrays(tmp_path / "a").items()}
    (tmp_path / "a" / "input_scores.json.gz").write_bytes(gzip.compress(json.dumps(flat).encode()))
    (tmp_path / "a" / "input_scores.npz").unlink()
    assert compare_runs(tmp_path / "a", None, "energy", "msp")["rows"] == doc["rows"]
