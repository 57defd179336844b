"""The API reference builds from the docstrings without a single pdoc warning."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path):
    if shutil.which("pdoc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("pdoc is not installed (pip install -e .[docs])")
    # a copy of the script outside this checkout: no .venv beside it, as in a user's own environment
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "build_api_docs.sh"
    shutil.copy(ROOT / "scripts" / "build_api_docs.sh", script)
    import os
    r = subprocess.run(["bash", str(script), str(tmp_path / "api")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    pages = {p.relative_to(tmp_path / "api").as_posix() for p in (tmp_path / "api").rglob("*.html")}
    assert {"ross_ood/detectors.html", "ross_ood/smoothing.html", "ross_ood/cli/settings.html", "ross_ood/certify.html",
            "ross_ood/runs/rundir.html", "ross_ood/engine/adversarial.html"} <= pages
    page = (tmp_path / "api" / "ross_ood" / "detectors.html").read_text()
    assert "tau_quantile" in page and "fit_features" in page  # the docstrings made it in


def _configs(sub):
    root = Path(__file__).resolve().parents[1] / "configs" / sub
    return sorted(root.glob("*.yaml"))


@pytest.mark.parametrize("path", _configs("leaderboard") + _configs("leaderboard/certify") + _configs("leaderboard/convergence")
                         + _configs("benchmarks") + _configs("imagenet") + _configs("imagenet/convergence"),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_run_configs_validate(path, tmp_path):
    """Every committed run config (the leaderboard rows, their certificates, the clean tables) is read
    and validated as its command would, and names a zoo model: a typo fails here, not on a GPU loan."""
    import yaml

    from ross_ood.cli.settings import AttackSettings, CertifySettings, EvalSettings, load_config_file
    from ross_ood.models import ZOO
    doc = yaml.safe_load(path.read_text())
    cls = (AttackSettings if "eps" in doc else CertifySettings if "certify" in (path.parent.name, path.stem)
           else EvalSettings)
    values = load_config_file(path, cls)
    values.pop("checkpoint", None)  # a run's own weights under runs/ need not exist here
    values["out"] = str(tmp_path / "o")
    st = cls(**values)
    models = st.model if isinstance(st.model, list) else [st.model]
    assert all(m in ZOO for m in models if m), models


@pytest.mark.parametrize("path", _configs("train"), ids=lambda p: p.name)
def test_committed_training_recipes_validate(path, tmp_path):
    """Every training recipe is read and validated as ``ross train --config`` would, and starts from a zoo model."""
    from ross_ood.cli.settings import TrainSettings, load_config_file
    from ross_ood.models import ZOO
    values = load_config_file(path, TrainSettings)
    values["out"] = str(tmp_path / "o")
    st = TrainSettings(**values)
    assert st.model in ZOO
