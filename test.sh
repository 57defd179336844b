#!/usr/bin/env bash
# The tests: sets up .venv if needed, then runs pytest. Data come from $ROSS_DATA, else ../shared/data.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
