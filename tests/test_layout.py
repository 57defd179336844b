"""The four wings import one way, with no cycle (import-linter contracts in pyproject.toml), and
the source passes ruff."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd, config=None):
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e .[test])")
    args = [exe, "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd / "src"), "PATH": "/usr/bin:/bin"})


def test_import_contracts_hold():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "4 kept, 0 broken" in r.stdout


def test_the_contracts_catch_a_wing_import_and_a_cycle(tmp_path):
    """The same contracts on a copy of the package with a core module importing cli, and two
    engine modules importing each other: both contracts break."""
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    pkg = tmp_path / "src" / "ross_ood"
    (pkg / "metrics.py").write_text((pkg / "metrics.py").read_text() + "\nfrom ross_ood.cli import settings  # noqa\n")
    (pkg / "engine" / "evaluate.py").write_text((pkg / "engine" / "evaluate.py").read_text()
                                                + textwrap.dedent("""
                                                def _late():
                                                    from ross_ood.engine import adversarial  # noqa
                                                """))
    r = _lint_imports(tmp_path)
    assert r.returncode != 0
    assert "the core imports no wing BROKEN" in r.stdout
    assert "no import cycle among the modules of any package BROKEN" in r.stdout


def test_ruff_is_clean():
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e .[test])")
    r = subprocess.run([exe, "check", "src", "tests", "benchmarks", "scripts", "examples"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]


def _imported_after(code: str) -> set:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    import json
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    return {m.split(".")[0] for m in json.loads(out)}


def test_start_up_imports_only_what_a_command_needs():
    """``ross --help`` needs neither torch nor the settings (start-up in a fraction of a second); the
    API pulls in torch but not scipy or scikit-learn until a metric or certificate is computed."""
    mods = _imported_after("from ross_ood.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert "torch" not in mods and "numpy" not in mods and "ross_ood" in mods
    mods = _imported_after("import ross_ood")
    assert "torch" not in mods
    mods = _imported_after("import ross_ood\nross_ood.MedianSmoothing, ross_ood.robustness_report, ross_ood.Attack")
    assert "torch" in mods and "scipy" not in mods and "sklearn" not in mods
    mods = _imported_after("import ross_ood\nross_ood.ood_metrics([1.0, 2.0], [0.0, 1.5])")
    assert "sklearn" in mods  # and the metric itself works after the lazy import


def test_the_lazy_package_hands_out_every_public_name_and_subpackage():
    import ross_ood
    for name in ross_ood.__all__:
        assert getattr(ross_ood, name) is not None, name
    assert ross_ood.precision.PRECISIONS[0] == "auto"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ross_ood.nope
