#!/usr/bin/env bash
# The deterministic simulator's long sweep: seeds FROM..FROM+N of crates/sim on a release
# build, each seed in its own process, one per core at a time. Prints one line per seed
# as it ends and a summary; a failing seed is printed with its faults and the command that
# replays it alone. `./scripts/test.sh` runs a bounded range (the default of the test).
#
#   ./scripts/sim.sh [--seeds N] [--from FROM]     (default: 1000 seeds from 0)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=1000
from=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --from) from="$2"; shift 2 ;;
    *) echo "usage: scripts/sim.sh [--seeds N] [--from FROM]"; exit 2 ;;
  esac
done
echo "==> building the simulator (release, a few minutes the first time)"
cargo test --release -p gregor-sim --test seeds --no-run --quiet
echo "==> seeds $from..$((from + seeds))"
SIM_SEEDS="$from..$((from + seeds))" \
  cargo test --release -p gregor-sim --test seeds no_seed_loses -q -- --nocapture 2>&1 \
  | grep -E '^(seed |  |[0-9]+ seeds in|thread|seeds that)'
exit "${PIPESTATUS[0]}"
