#!/usr/bin/env bash
# Set up everything tidemark needs on a fresh Debian 12 machine with Python 3.11 and Java 17:
# Debian's redis-server, and a virtualenv (.venv) with the pinned Python dependencies.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "bootstrap: installing redis-server from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
command -v java >/dev/null 2>&1 || { echo "bootstrap: Java 17 is required (apt-get install -y openjdk-17-jre-headless)"; exit 1; }

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import tidemark, pyflink, chdb, kafka, crc32c" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.tidemark-installed ]; then
  echo "bootstrap: installing Python dependencies (the first time takes a few minutes)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  touch .venv/.tidemark-installed
fi
echo "bootstrap: ready (.venv/bin/tidemark)"
