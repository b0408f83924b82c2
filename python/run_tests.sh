#!/usr/bin/env bash
# The Python side of the test command, for work on the bindings:
#
#   python/run_tests.sh        # SKIP_CARGO_TEST=0 to run the Rust tests too
#
# The command itself, with its options, is ../run_tests.sh.
set -euo pipefail
SKIP_CARGO_TEST="${SKIP_CARGO_TEST:-1}" exec bash "$(dirname "${BASH_SOURCE[0]}")/../run_tests.sh" "$@"
