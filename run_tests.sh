#!/usr/bin/env bash
# Every test, Rust and Python: the README's test command, and what CI runs.
#
#   bash run_tests.sh
#
# 1. `cargo test --locked`: the crate's unit, integration and doc tests.
#    The remote tests are listed as ignored (they need a sqld: see README).
# 2. A virtual environment (python/.venv, or $TRACE_WRITER_VENV) with maturin,
#    pytest and prometheus_client from PyPI, the extension built by
#    `maturin develop` in the dev profile into the same target/ folder
#    (libsql-ffi and every crate whose features agree are reused), and
#    pytest on python/tests.
#
# Environment:
#   SKIP_CARGO_TEST=1            run only the Python side
#   PYTHON=python3.12            the interpreter that creates the venv
#   PYTEST_ARGS="-x -k writer"   extra pytest arguments
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${TRACE_WRITER_VENV:-$ROOT/python/.venv}"
PYTHON="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Spill and dead-letter files of the tests' :memory: writers go to a
# throwaway state folder, not the user's ~/.local/state/trace-writer.
if [ -z "${TRACE_WRITER_KEEP_STATE_HOME:-}" ]; then
    XDG_STATE_HOME="$(mktemp -d)"
    export XDG_STATE_HOME
    trap 'rm -rf "$XDG_STATE_HOME"' EXIT
fi

if [ "${SKIP_CARGO_TEST:-0}" != 1 ]; then
    echo "== cargo test --locked"
    cargo test --locked
fi

echo "== python environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "maturin==1.16.*" pytest prometheus_client

echo "== maturin develop (dev profile, target: $CARGO_TARGET_DIR)"
(cd "$ROOT/python" && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --locked)

echo "== pytest"
# The suite's conftest fails the run if no test passed; pytest itself exits
# with 5 when none was collected.
# shellcheck disable=SC2086
# The report lets CI check that the Python tests ran.
"$VENV/bin/python" -m pytest "$ROOT/python/tests" -q \
    --junitxml "$CARGO_TARGET_DIR/pytest-report.xml" ${PYTEST_ARGS:-}
