"""The API reference builds from the docstrings without a single pdoc warning."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    pages = {p.name for p in (tmp_path / "api" / "ross_ood").glob("*.html")}
    assert {"detectors.html", "smoothing.html", "settings.html", "certify.html"} <= pages
    page = (tmp_path / "api" / "ross_ood" / "detectors.html").read_text()
    assert "tau_quantile" in page and "fit_features" in page  # the docstrings made it in
