#!/usr/bin/env bash
# Set up (scripts/setup.sh) and open the dashboard on a demo: a real llama-server (built once,
# cached) supervised by llmtop with a tiny generated model; a SIMULATED GPU where no NVIDIA
# driver is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/llmtop demo "$@"
