#!/usr/bin/env bash
# Every test, Rust and Python: the README's test command, and what CI runs.
#
#   bash run_tests.sh
#
# 1. `cargo test --locked`: the crate's unit, integration and doc tests.
#    The remote tests are listed as ignored (they need a sqld: see README).
# 2. python/run_tests.sh: a virtual environment with maturin and pytest from
#    PyPI, the extension built into the same target/ folder, and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
echo "== cargo test --locked"
cargo test --locked
SKIP_CARGO_TEST=1 bash python/run_tests.sh
