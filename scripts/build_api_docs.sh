#!/usr/bin/env bash
# Build the API reference from the docstrings (pdoc) into build/api/ (or $1), failing on any
# pdoc warning (a broken cross-reference, an unreadable docstring, a module that fails to import).
# The interpreter: $PYTHON (the tests pass their own), else the checkout's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/api}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# the package's __all__ lists its API names, not its modules: name the public modules too
modules=(ross_ood ross_ood.detectors ross_ood.scores ross_ood.smoothing ross_ood.noise ross_ood.model
         ross_ood.metrics ross_ood.attacks ross_ood.certify ross_ood.validate ross_ood.data ross_ood.models ross_ood.store
         ross_ood.progress ross_ood.engine ross_ood.runs ross_ood.cli ross_ood.cli.settings ross_ood.cli.config
         ross_ood.cli.runtime ross_ood.cli.jobs)
PYTHONWARNINGS=always "${PYTHON:-.venv/bin/python}" -m pdoc --docformat numpy -o "$out" "${modules[@]}" 2>"$log" || { cat "$log" >&2; exit 1; }
if grep -qi "warn" "$log"; then
  echo "pdoc printed warnings:" >&2
  cat "$log" >&2
  exit 1
fi
echo "API reference in $out/index.html ($(find "$out" -name '*.html' | wc -l) pages)"
