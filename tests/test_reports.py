"""Config files, sweeps, aggregation, and `ross report` reproducing stored tables byte for byte."""
import json

import pytest

from ross_ood import cli
from ross_ood.cli.settings import EvalSettings, SweepSettings, load_config_file
from ross_ood.runs.report import write_report
from ross_ood.runs.tables import aggregate, render

from .conftest import DATA_ROOT, need_data


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("benchmark: mnist\nlimit: 50\nsigma: 0.1\nood: [a=b.zip]\nn-samples: 7\n")
    got = load_config_file(f, EvalSettings)
    assert got == {"benchmark": "mnist", "limit": 50, "sigma": 0.1, "ood": ["a=b.zip"], "n_samples": 7}
    args = cli.build_parser().parse_args(["eval", "--config", str(f), "--limit", "9", "--out", str(tmp_path)])
    st = cli.resolve_settings(args)
    assert st.limit == 9 and st.benchmark == "mnist" and st.n_samples == 7  # flag > file > default
    assert st.seed == EvalSettings().seed and st.extra_ood == {"a": "b.zip"}


@pytest.mark.parametrize("text,match", [
    ("benchmrk: cifar10\n", "unknown config key 'benchmrk'"),
    ("limit: many\n", "'limit' must be int"),
    ("sigma: [1]\n", "'sigma' must be float"),
    ("only_extra: 3\n", "'only_extra' must be bool"),
    ("- a\n- b\n", "must hold a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_config_files(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config_file(f, EvalSettings)


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("benchmark: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config_file(f, EvalSettings)


def test_cli_reports_config_errors(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("detectorz: msp\n")
    assert cli.main(["eval", "--config", str(f)]) == 2
    assert "unknown config key 'detectorz'" in capsys.readouterr().err


def test_aggregate_mean_and_std():
    docs = [{"command": "eval", "seed": s, "id_accuracy": a, "results": [{"detector": "msp", "ood_set": "x",
                                                                              "auroc": v, "fpr95": 1 - v}],
             "means": [], "wall_time_s": 1.0} for s, a, v in [(0, 0.8, 0.6), (1, 0.9, 0.8)]]
    agg = aggregate(docs, ["s0", "s1"])
    r = agg["results"][0]
    assert r["auroc"] == pytest.approx(0.7) and r["auroc_std"] == pytest.approx(0.1)
    assert agg["id_accuracy"] == pytest.approx(0.85) and agg["id_accuracy_std"] == pytest.approx(0.05)
    assert agg["runs"] == ["s0", "s1"] and agg["seed"] == [0, 1]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    need_data("cifar10", "test.zip")
    from ross_ood.cli.jobs import run_eval, run_sweep
    root = tmp_path_factory.mktemp("rep")
    common = dict(data_root=str(DATA_ROOT), limit=16, block_size=16, batch_size=16, progress=False, device="cpu",
                  noise_space="normalized")
    ev = run_eval(EvalSettings(**common, out=str(root / "eval"), detectors="msp,ross-msp,ross-fdbd", n_samples=5))
    sw = run_sweep(SweepSettings(**common, out=str(root / "sweep"), detectors="ross-msp", n_samples=5,
                                 n_samples_values="3,5", lam_values="0.01,0.05", sigma_values="0.05,0.1",
                                 attack_eps="8", transfer_steps=3))
    return root, ev, sw


@pytest.mark.slow
def test_sweep_grid_and_slicing_invariant(small_runs):
    root, ev, sw = small_runs
    means = sw["means"]
    grid = {(r["param"], r[r["param"]], r["detector"], r["condition"]) for r in means}
    conds = {"clean", "PGD-Min 8/255", "PGD-Max 8/255"}
    want = {(p, v, "ross-msp", c) for p, vs in (("lam", [0.01, 0.05]), ("n_samples", [3, 5]),
                                                 ("sigma", [0.05, 0.1])) for v in vs for c in conds}
    assert grid == want and len(means) == len(want)
    # N = 5 sliced from the sweep equals the eval run with N = 5 (same noise draws 0..4)
    n5 = {r["ood_set"]: r for r in sw["results"] if r["param"] == "n_samples" and r["n_samples"] == 5
          and r["condition"] == "clean"}
    for r in ev["results"]:
        if r["detector"] == "ross-msp":
            assert n5[r["ood_set"]]["auroc"] == pytest.approx(r["auroc"], abs=1e-12)
    # lambda = 0.01 at sigma 0.05 is the same setting in all three sweeps
    a = [r["auroc"] for r in means if r["condition"] == "clean" and r["lam"] == 0.01 and r["n_samples"] == 5
         and r["sigma"] == 0.05]
    assert len(a) == 3 and max(a) - min(a) < 1e-12


@pytest.mark.slow
def test_report_reproduces_tables_byte_for_byte(small_runs):
    root, _, _ = small_runs
    path = write_report(root)
    text = path.read_text()
    for sub in ("eval", "sweep"):
        stored = (root / sub / "results.md").read_text()
        assert stored.rstrip("\n") in text  # the same table, byte for byte
        assert render(json.loads((root / sub / "results.json").read_text())) + "\n" == stored
    assert text.index("source: eval") < text.index("source: sweep")
    pngs = sorted((root / "figures").glob("*.png"))
    assert any("hist-ross-msp-D" in p.name for p in pngs) and any("sweep-lam" in p.name for p in pngs)
    before = {p.name: p.read_bytes() for p in pngs}
    again = write_report(root).read_text()
    assert again == text
    assert {p.name: p.read_bytes() for p in sorted((root / "figures").glob("*.png"))} == before


def test_reproduce_openood_refuses_without_data(tmp_path):
    from ross_ood.cli.reproduce import run_reproduce
    with pytest.raises(FileNotFoundError, match=r"missing: --checkpoints DIR.*benchmark_imglist/cifar10"):
        run_reproduce("openood", tmp_path / "out", data_root=tmp_path)
    with pytest.raises(ValueError, match="unknown preset 'cifar'"):
        run_reproduce("cifar", tmp_path / "out", data_root=tmp_path)


def test_aggregate_keeps_notes_that_differ_per_run():
    docs = [{"command": "eval", "seed": s, "notes": ["same", f"subset seed {s}"], "results": [], "means": []}
            for s in (0, 1)]
    assert aggregate(docs, ["a", "b"])["notes"] == ["same", "a: subset seed 0", "b: subset seed 1"]


@pytest.mark.parametrize("command", ["eval", "attack", "certify", "sweep", "train"])
def test_help_shows_every_setting_with_its_default(command, capsys):
    from dataclasses import fields

    from ross_ood.cli.settings import COMMANDS
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in fields(COMMANDS[command]):
        flag = "--" + f.name.replace("_", "-")
        assert flag in out or f"--no-{f.name.replace('_', '-')}" in out, flag
    assert "(default: 0.05)" in out or command in ("certify", "train")  # help texts take the defaults
