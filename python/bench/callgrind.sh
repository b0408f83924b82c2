#!/usr/bin/env bash
# Instructions per event of a workload of bench/callgrind.py, all threads:
# two runs under callgrind with N1 and N2, the difference divided by the
# difference in events.
#
#   bench/callgrind.sh record 2000 6000     # record_event(dict), N = calls
#   bench/callgrind.sh c 8 24               # the (c) row, N = tasks (80 events each)
#
# PYTHON picks the interpreter (default: python3); OUT keeps the callgrind
# files (default: a temp folder) for callgrind_annotate.
set -euo pipefail
workload="$1" n1="$2" n2="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
python="${PYTHON:-python3}"
total() {
    valgrind --tool=callgrind --callgrind-out-file="$out/$workload-$1.out" \
        "$python" "$here/callgrind.py" "$workload" "$1" >/dev/null 2>&1
    # Summed over the threads' files (callgrind writes one per thread when asked,
    # one file here): the `summary:` line.
    grep -h '^summary:' "$out/$workload-$1.out"* | awk '{s += $2} END {print s}'
}
t1="$(total "$n1")"
t2="$(total "$n2")"
case "$workload" in
    record) events=$((n2 - n1)) ;;
    c) events=$(((n2 - n1) * 80)) ;;
esac
echo "$workload: $t1 instructions at $n1, $t2 at $n2: $(((t2 - t1) / events)) per event (files in $out)"
