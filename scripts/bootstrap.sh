#!/usr/bin/env bash
# Set up everything tidemark needs on a fresh Debian 12 machine with Python 3.11 and Java 17:
# Debian's redis-server, a virtualenv (.venv) with the pinned Python dependencies, and the
# pinned Java jars of flink-conf/jars.lock (Apache Kafka broker, Flink's Kafka connector)
# from Maven Central with `mvn dependency:get`, checksum-verified.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "bootstrap: installing redis-server from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "bootstrap: installing maven from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq maven >/dev/null
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
.venv/bin/python -m tidemark.jars fetch
echo "bootstrap: ready (.venv/bin/tidemark)"
