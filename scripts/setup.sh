#!/usr/bin/env bash
# Create .venv (once) and install ross-ood with its test, plot and docs extras.
# torch is pinned (requirements-cpu.txt) so that pip takes the local CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.ross-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-cpu.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-cpu.txt -e ".[test,plots,docs]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import ross_ood, torch, sklearn, scipy" && touch "$stamp"
fi
