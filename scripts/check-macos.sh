#!/usr/bin/env bash
# The macOS gate: `cargo clippy -D warnings` over the whole workspace, all
# targets, for aarch64-apple-darwin and x86_64-apple-darwin. There is no Mac
# here; this proves the macOS code compiles and is lint-clean against the
# real crate APIs and SDK headers. Installs what it needs on first run.
#   scripts/check-macos.sh            # both targets
#   scripts/check-macos.sh x86_64-apple-darwin
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-apple-darwin x86_64-apple-darwin)
for target in "${targets[@]}"; do
  echo "==> cargo clippy --target $target"
  env_lines=$(scripts/darwin-env.sh "$target")
  # A subshell per target: the bindgen variable is not per-target.
  (
    eval "$env_lines"
    cargo clippy --workspace --all-targets --target "$target" --locked -- -D warnings
  )
done
echo "==> macOS cross-check passed for: ${targets[*]}"
