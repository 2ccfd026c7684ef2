#!/usr/bin/env bash
# The fault suite's long profile: every scenario of tests/test_faults.py run N times
# (default 20) against the debug build, each judged by its checker. `./scripts/test.sh`
# runs the same scenarios once (the bounded profile). Prints one line per run.
#
#   ./scripts/faults.sh [--runs N] [-k EXPRESSION]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
select=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    -k) select=(-k "$2"); shift 2 ;;
    *) echo "usage: scripts/faults.sh [--runs N] [-k EXPRESSION]"; exit 2 ;;
  esac
done
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
cargo build --quiet
echo "==> $runs runs of each fault scenario (tests/test_faults.py)"
# librdkafka's own log lines (they start with %) would bury the runs' figures.
FAULT_RUNS="$runs" GREGOR_BIN="$PWD/target/debug/gregor" \
  python3 -m pytest tests/test_faults.py -s -q -p no:cacheprovider "${select[@]}" 2>&1 | grep -v '^%'
exit "${PIPESTATUS[0]}"
