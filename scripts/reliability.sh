#!/usr/bin/env bash
# The long part of the reliability suite (docs/reliability.md), as root.
# CI runs the fast part inside scripts/test.sh (crash at every step, 1,000
# flows, 200 up/down cycles, a 20 s soak) and 60 s of each fuzz target.
# This runs the full figures, each bounded in count and time:
#   scripts/reliability.sh                 # everything: about 75 minutes
#   SOAK_SECS=300 FUZZ_SECS=120 scripts/reliability.sh   # a shorter pass
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "reliability.sh: run as root (the tests make network namespaces)" >&2; exit 1; }
soak=${SOAK_SECS:-1800}
fuzz=${FUZZ_SECS:-600}
export CI=true # end-to-end tests fail rather than skip
step() { printf '\n=== %s\n' "$*"; }
run() { cargo test --locked -p ztun-tests --test "$1" -- --nocapture --test-threads 1 "${@:2}" 2>&1 | grep -E '^(test |test result)|concurrent flows|UDP flood|cycles in|soak |crashed after|panicked'; }

cargo build --workspace --locked --bins --quiet
step "crash at every step"
run crash_e2e
step "10,000 concurrent flows and a UDP flood"
ZTUN_LOAD_FLOWS=10000 run load_e2e
step "1,000 up/down cycles"
ZTUN_CYCLES=1000 run linux_e2e up_down_cycles
step "soak: ${soak} s of mixed traffic"
ZTUN_SOAK_SECS=$soak run soak_e2e
step "fuzzing: ${fuzz} s per target"
scripts/fuzz.sh "$fuzz"
