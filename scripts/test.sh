#!/usr/bin/env bash
# The test suite on a fresh machine: install what is needed, lint, then every test (unit,
# component tests against a real broker / ClickHouse engine / Redis, and end-to-end and
# failure tests on a real standalone Flink cluster). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
exec .venv/bin/pytest -q "$@"
