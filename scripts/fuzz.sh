#!/usr/bin/env bash
# Runs each fuzz target for SECS seconds (default 60) and reports executions.
#   scripts/fuzz.sh              # every target, 60 s each
#   scripts/fuzz.sh 300 control_frame
# Needs the nightly toolchain (installed by rustup if missing) and cargo-fuzz.
# Crashes land in fuzz/artifacts/TARGET/; fix the bug, add a unit test, and
# keep the input in fuzz/regressions/TARGET/ so every run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(control_frame)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked >&2

seed() {
  # Seeds: every golden XPC fixture framed as the Unix socket carries it,
  # written by Python's plistlib so the corpus does not depend on our encoder.
  local dir=fuzz/corpus/$1
  mkdir -p "$dir"
  # Every input that once crashed a target is replayed on every run.
  if [ -d "fuzz/regressions/$1" ]; then cp fuzz/regressions/"$1"/* "$dir"/; fi
  case $1 in
    control_frame)
      python3 - "$dir" tests/fixtures/xpc/*.plist <<'PY'
import pathlib, plistlib, struct, sys
out = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    body = plistlib.dumps(plistlib.loads(pathlib.Path(name).read_bytes()), fmt=plistlib.FMT_BINARY)
    (out / (pathlib.Path(name).stem + ".bin")).write_bytes(struct.pack(">I", len(body)) + body)
PY
      ;;
  esac
}

for t in "${targets[@]}"; do
  seed "$t"
  log=$(mktemp)
  echo "==> fuzz $t for ${secs}s"
  if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz $t: CRASH; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  echo "fuzz $t: ${done_line:-no summary} (${cov:-cov unknown}), no crash"
  rm -f "$log"
done
