#!/usr/bin/env bash
# The test command: the Rust tests, then the Python tests, on a fresh machine.
#
#   python/run_tests.sh            # from anywhere in the repository
#
# It creates a virtual environment (python/.venv, or $TRACE_WRITER_VENV),
# installs maturin and pytest from PyPI, builds the extension in the dev
# profile with `maturin develop` and runs pytest.
#
# libsql's C library is compiled once: `cargo test` and `maturin develop`
# both use the workspace's target/ folder (or $CARGO_TARGET_DIR) and the dev
# profile, so the second build reuses libsql-ffi and every crate whose
# features agree.
#
# Environment:
#   SKIP_CARGO_TEST=1   run only the Python side
#   PYTHON=python3.12   the interpreter that creates the venv
#   PYTEST_ARGS="-x -k writer"   extra pytest arguments
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${TRACE_WRITER_VENV:-$ROOT/python/.venv}"
PYTHON="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if [ "${SKIP_CARGO_TEST:-0}" != 1 ]; then
    echo "== cargo test --locked"
    cargo test --locked
fi

echo "== python environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "maturin==1.16.*" pytest

echo "== maturin develop (dev profile, target: $CARGO_TARGET_DIR)"
(cd "$ROOT/python" && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --locked)

echo "== pytest"
# The suite's conftest fails the run if no test passed; pytest itself exits
# with 5 when none was collected.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pytest "$ROOT/python/tests" -q ${PYTEST_ARGS:-}
