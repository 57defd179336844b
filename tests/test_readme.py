"""Every code block of the README and the guides runs: Python blocks are executed, and every
``ross`` command line of a bash block is parsed and its settings validated as ``ross`` would."""
import re
import shlex
from pathlib import Path

import pytest

from .conftest import DATA_ROOT, readme_images

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guide").glob("*.md"))]


def _blocks(lang):
    out = []
    for page in PAGES:
        for k, code in enumerate(re.findall(rf"```{lang}\n(.*?)```", (ROOT / page).read_text(), re.S)):
            out.append(pytest.param(code, id=f"{page}#{k}"))
    return out


def test_the_readme_quickstart_is_within_its_first_80_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    start = lines.index("## Quickstart: a detector for your own network")
    end = start + 1 + lines[start + 1:].index("```", lines[start + 1:].index("```python") + 1)
    assert end < 80
    quick = "\n".join(lines[start:end])
    for call in ("ross_ood.wrap(", ".fit(", ".score(", ".predict(", "ood_metrics("):
        assert call in quick


#: pages whose Python blocks run real attacks or a real benchmark (seconds to a minute): the slow tier
SLOW_PAGES = ("docs/guide/evaluate.md", "docs/guide/attack.md")


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW_PAGES else p for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """A page's Python blocks run in order in one namespace (a later block may use an earlier one's names)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    if not blocks:
        pytest.skip("no Python block")
    if page == "docs/guide/imagenet.md":  # its archives are packed, never in the data root: tiny ones here
        from .test_imagenet import pack_tiny
        pack_tiny(tmp_path / "extra")
        monkeypatch.setenv("ROSS_EXTRA_DATA", str(tmp_path / "extra"))
    elif any("build_benchmark" in c or "load_model(" in c for c in blocks):
        if not (DATA_ROOT / "cifar10-png" / "test.zip").is_file():
            pytest.skip("needs the data root")
        monkeypatch.setenv("ROSS_DATA", str(DATA_ROOT))
    monkeypatch.chdir(tmp_path)
    readme_images(tmp_path / "my_images")  # what the README's own-data lines read
    namespace = {"__name__": "__block__"}
    for code in blocks:
        exec(compile(code, f"<{page}>", "exec"), namespace)


@pytest.mark.parametrize("code", _blocks("bash"))
def test_ross_command_lines_parse(code, tmp_path, monkeypatch):
    from ross_ood.cli import build_parser, resolve_settings
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")  # plugin files the pages name by their repo path
    for line in code.splitlines():
        words = shlex.split(line.split("  #")[0])
        if not words or words[0] != "ross":
            continue
        args = build_parser().parse_args(words[1:])
        if args.command in ("eval", "attack", "certify", "sweep", "train"):
            resolve_settings(args)  # validated as the command would, before any work
