"""Attacks plug in like scores: ``ross_ood.register_attack`` with the public kit
(``ross_ood.attacks.kit``), run in the adaptive target and ``worst`` from the API and from a
``--plugin`` file, cached and resumable; the command line's and ``combine --legs``' attack settings
come from one list."""
import dataclasses
import json

import numpy as np
import pytest

import ross_ood
from ross_ood.attacks import LEG_SETTINGS, SHARED_SETTINGS
from ross_ood.attacks.registry import _ATTACKS

from .conftest import DATA_ROOT, need_data

MOMENTUM = '''
import torch

import ross_ood
from ross_ood.attacks import kit

CALLS = [0]


def momentum_pgd(score_fn, x, eps, cfg, clip, *, restart, stop_fn, check_every, judge, keys, x_init, trace):
    """MI-FGSM (Dong et al. 2018) on the kit: sign steps of a decayed sum of L1-normalised gradients,
    the best iterate by the attacker's value (the judge on a smoothed detector)."""
    CALLS[0] += 1
    sign = 1.0 if cfg.objective == "max" else -1.0
    decay = dict(cfg.params)["decay"]
    x_adv = kit.start(x, eps, clip, cfg, restart) if x_init is None else kit.project(x_init, x, eps, clip)
    value = kit.valuer(score_fn, judge, sign)
    best_x, best_f = x_adv.clone(), value(x_adv, keys)
    g_sum, draw = torch.zeros_like(x), restart * (cfg.steps + 1) * cfg.eot
    for _ in range(cfg.steps):
        _, g = kit.gain_and_grad(score_fn, x_adv, sign, cfg.eot, draw)
        draw += cfg.eot
        g_sum = decay * g_sum + g / g.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = kit.project(x_adv + 2.5 * eps / cfg.steps * g_sum.sign(), x, eps, clip).detach()
        f = value(x_adv, keys)
        better = f > best_f
        best_x[better], best_f = x_adv[better], torch.where(better, f, best_f)
    return best_x, best_f


ross_ood.register_attack("momentum", momentum_pgd, steps=10, restarts=1, surrogates=("mean",),
                         params={"decay": 1.0}, early_stop=False)
'''


@pytest.fixture
def momentum(tmp_path):
    from ross_ood.cli.plugins import load_plugin
    path = tmp_path / "momentum.py"
    path.write_text(MOMENTUM)
    yield load_plugin(str(path))
    _ATTACKS.pop("momentum", None)


def test_each_budget_setting_belongs_to_one_leg_or_to_all():
    names = [f.name for f in dataclasses.fields(ross_ood.AttackBudget)]
    listed = [n for leg in LEG_SETTINGS.values() for n in leg] + list(SHARED_SETTINGS)
    assert sorted(listed) == sorted(names)  # every field once: combine --legs and the CLI read this list
    from ross_ood.cli.settings import budget_fields
    assert sorted(budget_fields().values()) == sorted(n for n in names if n != "transfer_step_size")


def _report(det, images, budget, cache):
    return ross_ood.robustness_report(det, images[:6], {"o": images[6:]}, eps=2 / 255, targets=["adaptive", "worst"],
                                      budget=budget, n_resamples=0, cache_dir=cache, progress=False)


def test_a_registered_attack_runs_in_worst_cached_and_resumable(cnn, images, momentum, tmp_path):
    det = ross_ood.MedianSmoothing(cnn, base="energy", n_samples=4, sigma=0.1, seed=0).fit(images)
    base = ross_ood.AttackBudget(adaptive_steps=3, adaptive_restarts=1, eotpgd_steps=0, square_queries=0,
                                 attack_n=2, surrogates=("mean",), precision="fp32")
    plain = _report(det, images, base, tmp_path / "c")
    withm = _report(det, images, dataclasses.replace(base, extra_attacks=("momentum",)), tmp_path / "c")
    assert momentum.CALLS[0] > 0
    assert "momentum" in withm.doc["means"][0]["attack"] and withm.doc["attack_settings"]["extra_attacks"] == [
        "momentum"]
    for side, s in (("min", "id_test"), ("max", "o")):  # the worst case over a superset of the same attacks
        a = withm.scores[("median-energy", 2 / 255, side, s, "worst")]
        b = plain.scores[("median-energy", 2 / 255, side, s, "worst")]
        assert (a <= b + 1e-12).all() if side == "min" else (a >= b - 1e-12).all()
    assert any("momentum-mean" in p.name for p in (tmp_path / "c").rglob("*"))
    files = sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file())
    calls = momentum.CALLS[0]
    again = _report(det, images, dataclasses.replace(base, extra_attacks=("momentum",)), tmp_path / "c")
    assert momentum.CALLS[0] == calls and sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file()) == files
    for k, v in withm.scores.items():
        np.testing.assert_array_equal(again.scores[k], v)
    x = ross_ood.Attack(det, eps=2 / 255, target="adaptive", budget=dataclasses.replace(
        base, extra_attacks=("momentum",)))(images[:3])
    assert float((x - images[:3]).abs().max()) <= 2 / 255 + 1e-6


def test_registration_and_names_are_checked(momentum):
    def fn(*a, **k):
        raise AssertionError
    with pytest.raises(ValueError, match="attack name 'apgd' is built in"):
        ross_ood.register_attack("apgd", fn)
    with pytest.raises(ValueError, match="already registered to"):
        ross_ood.register_attack("momentum", fn)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        ross_ood.register_attack("mine", fn, surrogates=("best",))
    with pytest.raises(ValueError, match="unknown attack 'nope'; registered attacks: momentum"):
        ross_ood.AttackBudget(extra_attacks=("nope",))


COMMON = ["--benchmark", "cifar10-jpeg", "--model", "resnet20", "--detectors", "median-energy", "-N", "3",
          "--sigma", "0.1", "--limit", "6", "--ood-sets", "tin", "--no-progress", "--device", "cpu",
          "--data-root", str(DATA_ROOT), "--bootstrap", "0", "--eps", "2", "--target", "adaptive,worst",
          "--adaptive-steps", "2", "--restarts", "1", "--eotpgd-steps", "0", "--attack-n", "2", "--square-queries", "0",
          "--precision", "fp32"]


@pytest.mark.slow
def test_a_plugin_attack_runs_from_the_command_line_and_resumes(tmp_path, capsys):
    need_data("cifar10", "test.zip")
    from ross_ood import cli
    plugin = tmp_path / "momentum.py"
    plugin.write_text(MOMENTUM)
    out = tmp_path / "run"
    try:
        argv = ["attack", *COMMON, "--plugin", str(plugin), "--extra-attacks", "momentum", "--out", str(out)]
        assert cli.main(argv) == 0
        doc = json.loads((out / "results.json").read_text())
        assert doc["attack_settings"]["extra_attacks"] == ["momentum"]
        assert any("momentum" in r["attack"] for r in doc["means"])
        assert any("momentum-mean" in p.name for p in (out / "cache").rglob("*"))
        mod = [m for n, m in __import__("sys").modules.items() if n.startswith("ross_plugin_momentum")][0]
        calls = mod.CALLS[0]
        assert cli.main(argv) == 0  # resumed from its cache: the attack does not run again
        assert mod.CALLS[0] == calls and json.loads((out / "results.json").read_text())["means"] == doc["means"]
        capsys.readouterr()
        assert cli.main(["attack", *COMMON, "--extra-attacks", "momentum2", "--out", str(tmp_path / "x")]) == 2
        assert "unknown attack 'momentum2'" in capsys.readouterr().err
    finally:
        _ATTACKS.pop("momentum", None)
