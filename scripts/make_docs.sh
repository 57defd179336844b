#!/usr/bin/env bash
# Regenerate results/reproduce/ (the report shown in the README) from `ross reproduce offline`.
# About 45 minutes on 2 CPU cores; a killed run resumes from its cache.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ross reproduce offline --out runs/reproduce "$@"
rm -rf results/reproduce && mkdir -p results/reproduce
cp runs/reproduce/report.md results/reproduce/report.md
cp -r runs/reproduce/figures results/reproduce/figures
for d in eval attack sweep certify; do cp "runs/reproduce/$d/results.json" "results/reproduce/$d-results.json"; done
echo "results/reproduce updated"
