#!/usr/bin/env bash
# Profiles the broker under the side-by-side workloads with perf (software cpu-clock
# sampling with DWARF call graphs: this VM has no hardware PMU and the release build has no
# frame pointers) and writes one flamegraph per workload to bench/profiles/, plus the
# hottest symbols to stdout.
#
#   cargo build --release --features bench && cargo install inferno
#   bench/profile.sh [seconds-per-workload]      # default 6
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-6}"
bin=target/release/gregor
out=bench/profiles
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install linux-perf; cargo install inferno"; exit 1; }
done
[ -x "$bin" ] || { echo "$bin is missing: cargo build --release --features bench"; exit 1; }
data=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$bin" broker --data-dir "$data/d" --listen "127.0.0.1:$port" --metrics off >"$data/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data"' EXIT
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
b=(--bootstrap "127.0.0.1:$port")
profile() {  # name, then the gregor bench arguments
  local name=$1; shift
  echo "==> $name: gregor bench $*"
  "$bin" bench "$@" "${b[@]}" --seconds $((secs + 4)) >"$data/$name.bench" 2>/dev/null &
  local load=$!
  sleep 2
  local t0; t0=$(awk '{print $14+$15}' /proc/$broker/stat)
  perf record -q -F 299 -e cpu-clock --call-graph dwarf,16384 -p "$broker" -o "$data/$name.perf" -- sleep "$secs" 2>/dev/null
  local t1; t1=$(awk '{print $14+$15}' /proc/$broker/stat)
  wait $load || true
  grep -E "records/s|latency" "$data/$name.bench" | sed 's/^/   /'
  echo "   broker CPU: $(( (t1 - t0) * 100 / $(getconf CLK_TCK) / secs ))% of one core"
  perf script -i "$data/$name.perf" 2>/dev/null | inferno-collapse-perf >"$data/$name.folded"
  inferno-flamegraph --title "gregor broker: $name" <"$data/$name.folded" >"$out/$name.svg"
  echo "   hottest symbols (self time):"
  perf report -i "$data/$name.perf" --no-children --stdio --percent-limit 3 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -8 | sed 's/^/   /'
  echo "   flamegraph: $out/$name.svg"
}
profile produce-1kb produce --topic profile-1kb --partitions 16 --record-bytes 1024 --records 100000000 --acks 1
profile produce-100b produce --workload 1-topic-16-partitions-100b --records 100000000 --acks 1
profile e2e-150k e2e --workload 1-topic-16-partitions-1kb --records 100000000 --acks all --rate 150000 --linger-ms 0.5
profile consume-1mib consume --topic profile-1kb --partitions 16 --record-bytes 1024 --records 100000000 --fetch-bytes 1048576
