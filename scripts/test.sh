#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit/property/integration tests, the real-client
# pytest suites against the real broker binary, and a bounded run of each fuzz target.
# Installs what it needs (Python clients from PyPI, cargo-nextest and cargo-fuzz from crates.io).
#
#   GREGOR_FUZZ_SECONDS=N   seconds per fuzz target (default 30; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "installing test dependencies"
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
# `gregor bench` compiles librdkafka, which needs cmake and a C++ compiler; the suite also
# drives Debian's kcat, and the newcomer test uses git and unshare.
missing=""
for tool in cmake:cmake g++:g++ kcat:kcat git:git unshare:util-linux ip:iproute2 pkg-config:pkg-config; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
done
# librdkafka's TLS (gregor bench against SSL listeners) links OpenSSL.
[ -f /usr/include/openssl/ssl.h ] || missing="$missing libssl-dev"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq >/dev/null 2>&1 || true) && apt-get install -y -qq $missing >/dev/null || { echo "could not install$missing: install them and rerun"; exit 1; }
  else
    echo "these packages are needed:$missing; install them and rerun"; exit 1
  fi
fi

step "cargo fmt --check"
# The API modules are declared by the list in crates/broker/src/api/mod.rs (a macro), where
# cargo fmt does not look: rustfmt checks them by name.
cargo fmt --all -- --check && rustfmt --edition 2021 --check crates/broker/src/api/*.rs \
  || { echo "formatting differs: run 'cargo fmt --all && rustfmt --edition 2021 crates/broker/src/api/*.rs'"; exit 1; }

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "Rust tests (unit, proptest, integration)"
cargo build --workspace --quiet
cargo nextest run --workspace --no-fail-fast

step "real-client suites (pytest: kafka-python, confluent-kafka, aiokafka)"
GREGOR_BIN="$PWD/target/debug/gregor" python3 -m pytest tests -q -p no:cacheprovider

step "benchmark harness smoke run (gregor bench against Gregor and Tansu)"
# The smoke run checks that every figure is produced, not how fast: the debug build will do,
# and it reuses the librdkafka that clippy already compiled (a release build takes minutes).
cargo build --quiet --features gregor/bench
GREGOR_BIN="$PWD/target/debug/gregor" python3 bench/side_by_side.py --smoke

fuzz_seconds="${GREGOR_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  step "fuzzing each target for ${fuzz_seconds}s"
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
  for target in request_decode segment_recovery raft_decode sasl_exchange; do
    mkdir -p "fuzz/corpus/$target"
    # cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
    log="fuzz/$target.log"
    # No sanitizer: the decoders are safe Rust, so what fuzzing finds is a panic, which
    # libFuzzer catches without one; AddressSanitizer's instrumentation of every dependency
    # made the cold build of the targets the longest step of CI.
    if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -max_len=65536 >"../$log" 2>&1); then
      tail -n 60 "$log"
      echo "fuzz target $target failed: the crashing input is under fuzz/artifacts/$target"
      exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log" | tail -n 1)"
  done
fi

step "all tests passed"
