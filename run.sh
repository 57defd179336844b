#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs `ross eval` on the real (lossless) CIFAR-10 benchmark
# (configs/cifar10.yaml). Extra flags are passed on, e.g. ./run.sh --limit 200
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/ross eval --config configs/cifar10.yaml "$@"
