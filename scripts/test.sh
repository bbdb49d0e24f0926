#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite against the real components:
# a real llama-server, the simulated libnvidia-ml (built with gcc), and a confined systemd +
# journald sandbox (needs root and unshare). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check llmtop tests benchmarks scripts
.venv/bin/ruff format --check llmtop tests benchmarks scripts
# The layers of docs/ARCHITECTURE.md (contracts in pyproject.toml).
.venv/bin/lint-imports
# The type hints at module boundaries ([tool.mypy] in pyproject.toml).
.venv/bin/mypy
.venv/bin/python -m pytest -ra "$@"
