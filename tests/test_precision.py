"""Precision ``auto``: bf16 only where it is measured faster for the network on this machine, the
choice cached per machine and network, recorded by every run, and parts of one row that ran at
different precisions combined with the fact written down (never mixed silently)."""
import json
import warnings

import numpy as np
import pytest
import torch

import ross_ood
from ross_ood import precision as P

from .conftest import DATA_ROOT, need_data


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test measures into a cache of its own and starts with no memo."""
    monkeypatch.setenv("ROSS_PRECISION_CACHE", str(tmp_path / "precision.json"))
    monkeypatch.setattr(P, "_MEMO", {})
    monkeypatch.setattr(P, "_WARNED", set())


def _fake_speeds(monkeypatch, fp32, bf16):
    """Replace the timing by fixed ms per image; returns the list of calls."""
    calls = []

    def fake(model, precisions=("fp32", "bf16"), **kw):
        calls.append(model)
        return {"fp32": fp32, "bf16": bf16}
    monkeypatch.setattr(P, "measure_speeds", fake)
    return calls


@pytest.mark.parametrize("fp32, bf16, chosen", [(2.4, 1.3, "bf16"),   # native bf16: 1.8x faster
                                                (2.4, 33.9, "fp32"),  # emulated bf16 (AVX2): 14x slower
                                                (2.4, 2.0, "fp32"),   # 1.2x faster: within the margin
                                                (2.5, 2.0, "bf16")])  # exactly BF16_MARGIN of fp32's time
def test_auto_picks_bf16_only_where_measured_faster_by_the_margin(cnn, monkeypatch, fp32, bf16, chosen):
    _fake_speeds(monkeypatch, fp32, bf16)
    c = P.resolve_precision("auto", cnn)
    assert c.precision == chosen and c.requested == "auto"
    assert c.ms == {"fp32": fp32, "bf16": bf16}
    assert f"{bf16:.3g}" in c.reason and f"{fp32:.3g}" in c.reason


def test_the_measurement_is_cached_per_machine_and_network(cnn, tiny, monkeypatch, tmp_path):
    calls = _fake_speeds(monkeypatch, 2.0, 1.0)
    P.resolve_precision("auto", cnn)
    P.resolve_precision("auto", cnn)
    assert len(calls) == 1  # memo
    monkeypatch.setattr(P, "_MEMO", {})  # a new process: the file answers
    assert P.resolve_precision("auto", cnn).precision == "bf16" and len(calls) == 1
    doc = json.loads((tmp_path / "precision.json").read_text())
    assert doc["format"] == P.CACHE_FORMAT and len(doc["speeds"]) == 1
    (entry,) = doc["speeds"].values()
    assert entry["fp32"] == 2.0 and entry["bf16"] == 1.0 and entry["threads"] == torch.get_num_threads()
    P.resolve_precision("auto", tiny)  # another network: measured and added
    assert len(calls) == 2 and len(json.loads((tmp_path / "precision.json").read_text())["speeds"]) == 2
    torch.manual_seed(1)  # the same architecture with other weights: the same speeds, not measured again
    from .conftest import SmallCNN
    other = ross_ood.wrap(SmallCNN(), [0.5, 0.4, 0.3], [0.25, 0.2, 0.3])
    P.resolve_precision("auto", other)
    assert len(calls) == 2


def test_a_capped_instruction_set_is_another_machine(cnn, monkeypatch):
    """ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA change the kernels, so they key the cache."""
    calls = _fake_speeds(monkeypatch, 2.0, 1.0)
    P.resolve_precision("auto", cnn)
    import os
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA") != "SSE41" else "AVX2")
    P.resolve_precision("auto", cnn)
    assert len(calls) == 2


@pytest.mark.parametrize("text", ["not json", json.dumps({"format": "other", "speeds": {}}),
                                  json.dumps({"format": P.CACHE_FORMAT, "speeds": {"x": 1}})])
def test_a_bad_cache_file_is_measured_afresh(cnn, monkeypatch, tmp_path, text):
    (tmp_path / "precision.json").write_text(text)
    calls = _fake_speeds(monkeypatch, 2.0, 10.0)
    assert P.resolve_precision("auto", cnn).precision == "fp32" and len(calls) == 1
    assert json.loads((tmp_path / "precision.json").read_text())["format"] == P.CACHE_FORMAT


def test_forced_bf16_where_slower_runs_with_one_warning_giving_both_speeds(cnn, monkeypatch):
    _fake_speeds(monkeypatch, 2.4, 33.9)
    with pytest.warns(UserWarning) as rec:
        c = P.resolve_precision("bf16", cnn)
    assert c.precision == "bf16"
    (w,) = rec
    text = str(w.message)
    assert "\n" not in text and "33.9" in text and "2.4" in text and "14.1x slower" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process and device
        P.resolve_precision("bf16", cnn)


def test_forced_bf16_where_faster_and_fp32_say_nothing(cnn, monkeypatch):
    calls = _fake_speeds(monkeypatch, 2.4, 1.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", cnn).precision == "bf16"
        assert P.resolve_precision("fp32", cnn).precision == "fp32"
    assert len(calls) == 1  # fp32 needs no measurement


def test_fp16_on_the_cpu_is_refused_by_name(cnn):
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device"):
        P.resolve_precision("fp16", cnn)
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("fp8", cnn)


def test_the_real_measurement_times_both_and_the_choice_follows_it(cnn):
    ms = P.measure_speeds(cnn, batch=4, repeats=1)
    assert set(ms) == {"fp32", "bf16"} and all(np.isfinite(v) and v > 0 for v in ms.values())
    c = P.resolve_precision("auto", cnn)
    want = "bf16" if c.ms["bf16"] <= P.BF16_MARGIN * c.ms["fp32"] else "fp32"
    assert c.precision == want
    assert cnn.precision == "fp32"  # measuring leaves the model as it was


def _report(det, xs, **kw):
    return ross_ood.robustness_report(det, xs[:6], {"o": xs[6:]}, eps=2 / 255, targets=["adaptive"],
                                      budget=ross_ood.AttackBudget(adaptive_steps=2, adaptive_restarts=1,
                                                                   eotpgd_steps=0, square_queries=0, attack_n=2,
                                                                   **kw.pop("budget", {})),
                                      n_resamples=0, progress=False, **kw)


def test_a_report_records_the_precision_that_ran_and_shares_its_cache(cnn, images, monkeypatch, tmp_path):
    """auto resolved to fp32 is fp32: the same cache keys and numbers as fp32 asked for, and the
    report records both what was asked and what ran."""
    _fake_speeds(monkeypatch, 2.4, 33.9)
    det = ross_ood.MedianSmoothing(cnn, base="energy", n_samples=3, sigma=0.1, seed=0).fit(images)
    auto = _report(det, images, cache_dir=tmp_path / "c")
    assert auto.doc["attack_settings"]["precision"] == "fp32"
    assert auto.doc["precision"]["requested"] == "auto" and auto.doc["precision"]["precision"] == "fp32"
    assert auto.doc["precision"]["ms_per_image"] == {"fp32": 2.4, "bf16": 33.9}
    files = sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file())
    fp32 = _report(det, images, cache_dir=tmp_path / "c", budget={"precision": "fp32"})
    assert sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file()) == files  # nothing new computed
    assert fp32.doc["means"] == auto.doc["means"]
    with pytest.warns(UserWarning, match="bf16 is 14.1x slower"):
        bf16 = _report(det, images, cache_dir=tmp_path / "c", budget={"precision": "bf16"})
    assert bf16.doc["attack_settings"]["precision"] == "bf16"
    assert len([p for p in (tmp_path / "c").rglob("*") if p.is_file()]) > len(files)  # bf16 is its own attack


COMMON = ["--benchmark", "cifar10-jpeg", "--model", "resnet20", "--detectors", "median-energy", "-N", "3",
          "--sigma", "0.1", "--limit", "8", "--ood-sets", "tin", "--no-progress", "--device", "cpu",
          "--data-root", str(DATA_ROOT), "--bootstrap", "0", "--eps", "2", "--target", "adaptive,worst",
          "--adaptive-steps", "1", "--restarts", "1", "--eotpgd-steps", "0", "--attack-n", "2",
          "--square-queries", "0", "--transfer-steps", "1"]


@pytest.mark.slow
def test_parts_that_ran_at_different_precisions_combine_and_say_so(tmp_path, monkeypatch, capsys):
    """Parts of one row run on two kinds of machine (auto: bf16 on one, fp32 on the other) differ by
    float rounding only: each is a valid attack, so they combine, and the combined run names the
    precision of every part in its document and its table. Parts of one precision say nothing."""
    need_data("cifar10", "test.zip")
    from ross_ood import cli
    from ross_ood.runs.combine import combine_runs
    _fake_speeds(monkeypatch, 2.0, 1.0)  # this "machine" runs bf16 faster
    p1 = tmp_path / "p1"
    assert cli.main(["attack", *COMMON, "--part", "1/3", "--out", str(p1)]) == 0
    p3 = tmp_path / "p3"
    assert cli.main(["attack", *COMMON, "--part", "3/3", "--precision", "bf16", "--out", str(p3)]) == 0
    monkeypatch.setattr(P, "_MEMO", {})
    monkeypatch.setenv("ROSS_PRECISION_CACHE", str(tmp_path / "other-machine.json"))
    _fake_speeds(monkeypatch, 2.0, 30.0)  # and this one does not
    p2 = tmp_path / "p2"
    assert cli.main(["attack", *COMMON, "--part", "2/3", "--out", str(p2)]) == 0
    ran = {p: json.loads((p / "results.json").read_text())["attack_settings"]["precision"] for p in (p1, p2, p3)}
    assert ran == {p1: "bf16", p2: "fp32", p3: "bf16"}
    same = combine_runs([p1, p3], tmp_path / "same")
    assert "part_precisions" not in same and "gradient steps in bf16)" in (tmp_path / "same" / "results.md").read_text()
    doc = combine_runs([p1, p2, p3], tmp_path / "mixed")
    assert doc["part_precisions"] == {"1/3": "bf16", "2/3": "fp32", "3/3": "bf16"}
    assert any("different precisions (bf16 (parts 1/3, 3/3), fp32 (part 2/3))" in n for n in doc["notes"])
    assert "gradient steps in bf16 (parts 1/3, 3/3), fp32 (part 2/3)" in (tmp_path / "mixed" / "results.md").read_text()
    capsys.readouterr()
    assert cli.main(["combine", str(tmp_path / "mixed2"), str(p1), str(p2), str(p3)]) == 0
    assert "fp32 (part 2/3)" in capsys.readouterr().out


@pytest.mark.slow
def test_the_cli_warns_in_one_line_and_refuses_fp16_on_the_cpu(tmp_path, monkeypatch, capsys):
    need_data("cifar10", "test.zip")
    from ross_ood import cli
    _fake_speeds(monkeypatch, 2.4, 33.9)
    out = tmp_path / "bf16"
    assert cli.main(["attack", *COMMON, "--precision", "bf16", "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == ["ross attack: warning: precision bf16 is 14.1x slower than fp32 on this device (bf16 33.9 vs "
                   f"fp32 2.4 ms per image, forward + backward, {P._device_name(torch.device('cpu'))}); it runs as "
                   "asked (precision auto picks the faster)"]
    assert json.loads((out / "results.json").read_text())["attack_settings"]["precision"] == "bf16"
    assert cli.main(["attack", *COMMON, "--precision", "fp16", "--out", str(tmp_path / "fp16")]) == 2
    assert "precision 'fp16' needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "fp16").exists()
