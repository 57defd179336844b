"""``ross attack --budget quick|default`` (the API's presets, individual flags override them) and the
API's progress bars (on a terminal or when asked, never in a log unless asked, with the time left)."""
import io

import pytest
import torch

import ross_ood
from ross_ood.cli.app import build_parser, resolve_settings
from ross_ood.engine.report import BUDGET_PRESETS


def _settings(*flags, config=None):
    args = ["attack", "--detectors", "energy", "--out", "/tmp/unused-ross-out", *flags]
    if config is not None:
        args += ["--config", str(config)]
    return resolve_settings(build_parser("attack").parse_args(args))


def test_the_cli_presets_are_the_apis():
    assert _settings().attack_budget == BUDGET_PRESETS["default"]
    assert _settings("--budget", "default").attack_budget == BUDGET_PRESETS["default"]
    assert _settings("--budget", "quick").attack_budget == BUDGET_PRESETS["quick"]


def test_flags_given_beside_a_preset_override_it(tmp_path):
    st = _settings("--budget", "quick", "--adaptive-steps", "20", "--restarts", "3")
    want = BUDGET_PRESETS["quick"]
    assert (st.attack_budget.adaptive_steps, st.attack_budget.adaptive_restarts) == (20, 3)
    assert (st.attack_budget.transfer_steps, st.attack_budget.eotpgd_steps) == (want.transfer_steps, 0)
    # a flag set to the default preset's own value still overrides the quick preset
    assert _settings("--budget", "quick", "--transfer-steps", "40").attack_budget.transfer_steps == 40
    cfg = tmp_path / "c.yaml"
    cfg.write_text("budget: quick\nsquare_queries: 7\n")
    st = _settings(config=cfg)
    assert st.attack_budget.square_queries == 7 and st.attack_budget.adaptive_steps == want.adaptive_steps
    st = _settings("--budget", "default", config=cfg)  # the command line's preset beats the file's
    assert st.attack_budget.adaptive_steps == 40 and st.attack_budget.square_queries == 7
    assert st.to_dict()["budget"] == "default"


def test_an_unknown_preset_is_refused_by_name(capsys):
    from ross_ood import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["attack", "--budget", "fast", "--out", "/tmp/unused-ross-out"])
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    from ross_ood.engine.report import budget_preset
    with pytest.raises(ValueError, match="budget must be one of"):
        budget_preset("fast")


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def closed(monkeypatch):
    """(description, count, total) of every bar when it closes (tqdm redraws at most every 0.1 s,
    so a fast bar's last state need not reach the screen)."""
    import tqdm
    done = []

    class Recording(tqdm.tqdm):
        def close(self):
            if not self.disable and self.desc:
                done.append((self.desc.strip(), self.n, self.total))
            super().close()
    monkeypatch.setattr(tqdm, "tqdm", Recording)
    return done


@pytest.fixture
def det(cnn, images):
    return ross_ood.MedianSmoothing(cnn, base="energy", n_samples=3, sigma=0.1, seed=0)


def _report(det, images, progress):
    return ross_ood.robustness_report(det, images[:4], {"o": images[4:8]}, eps=2 / 255, targets=["transfer"],
                                      budget=ross_ood.AttackBudget(transfer_steps=2, precision="fp32"),
                                      n_resamples=0, progress=progress)


def test_progress_shows_on_a_terminal_and_when_asked_never_in_a_log(det, images, monkeypatch, closed):
    import sys
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    det.fit(images, progress=None)
    _report(det.fit(images), images, None)
    shown = err.getvalue()
    assert "fit median" in shown and "id_test clean" in shown and "o clean" in shown
    assert "id_test min 2/255 x1 attacks" in shown and "o max 2/255 x1 attacks" in shown
    assert "<" in shown and "img/s" in shown  # tqdm's time left and rate
    assert ("fit median", 12, 12) in closed and ("id_test clean", 4, 4) in closed
    assert ("id_test min 2/255 x1 attacks", 4, 4) in closed and ("o max 2/255 x1 attacks", 4, 4) in closed
    log = io.StringIO()  # not a terminal: nothing unless asked
    monkeypatch.setattr(sys, "stderr", log)
    _report(det.fit(images), images, None)
    assert log.getvalue() == ""
    _report(det, images, True)
    assert "x1 attacks" in log.getvalue()
    err2 = _Tty()
    monkeypatch.setattr(sys, "stderr", err2)
    _report(det.fit(images, progress=False), images, False)
    assert err2.getvalue() == ""


def test_attack_certification_and_feature_stats_show_progress(det, cnn, images, monkeypatch, closed):
    import sys
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    det.fit(images, progress=False)
    x = ross_ood.Attack(det, eps=2 / 255, target="transfer", budget=ross_ood.AttackBudget(transfer_steps=1))(images[:3])
    assert float((x - images[:3]).abs().max()) <= 2 / 255 + 1e-6
    assert "attack min x1" in err.getvalue() and ("attack min x1", 3, 3) in closed
    ross_ood.robustness_report(det, images[:4], {"o": images[4:8]}, eps=2 / 255, targets=["transfer"],
                               budget=ross_ood.AttackBudget(transfer_steps=1), n_resamples=0, certify_radii=[0.05],
                               certify_n=20, progress=True)
    assert ("id_test certify", 4, 4) in closed and ("o certify", 4, 4) in closed
    stats = ross_ood.fit_feature_stats(cnn, images, torch.arange(12) % 5, batch_size=5)
    assert len(stats) == 12 and "feature stats" in err.getvalue() and ("feature stats", 12, 12) in closed
