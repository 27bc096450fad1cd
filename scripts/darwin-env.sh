#!/usr/bin/env bash
# Prepares a darwin sysroot for `cargo check/clippy --target TARGET` on Linux
# and prints the environment to export for that one target:
#   eval "$(scripts/darwin-env.sh aarch64-apple-darwin)"
#
# Linking is impossible here (no Apple frameworks), so this is for check and
# clippy only. Headers come from the ziglang PyPI package (a venv, nothing
# global); the shim in scripts/darwin-shim supplies the <os/log.h> declarations
# zig's copy lacks (tracing-oslog compiles a C wrapper against it).
#
# One target per environment: xpc-connection-sys uses bindgen 0.53, which
# reads only the plain BINDGEN_EXTRA_CLANG_ARGS, not the per-target form.
# Never set DOCS_RS=1: it switches tun-rs to a docs-only build.
set -euo pipefail
target=${1:?usage: darwin-env.sh aarch64-apple-darwin|x86_64-apple-darwin}
case $target in
  aarch64-apple-darwin) clang_target=arm64-apple-macos11 ;;
  x86_64-apple-darwin) clang_target=x86_64-apple-macos10.15 ;;
  *) echo "darwin-env.sh: unsupported target $target; use aarch64-apple-darwin or x86_64-apple-darwin" >&2; exit 2 ;;
esac
t=${target//-/_}
here=$(cd "$(dirname "$0")" && pwd)
venv=${ZTUN_DARWIN_VENV:-$HOME/.cache/ztun-darwin-venv}
{
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  if ! command -v clang-19 >/dev/null || ! command -v llvm-ar-19 >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-19 libclang-19-dev llvm-19
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import ziglang' 2>/dev/null || "$venv/bin/pip" install -q ziglang
} >&2
z=$("$venv/bin/python" -c 'import ziglang,os;print(os.path.dirname(ziglang.__file__))')
inc="$z/lib/libc/include/any-darwin-any"
[ -f "$inc/xpc/xpc.h" ] || { echo "darwin-env.sh: darwin headers not found under $inc; delete $venv and retry" >&2; exit 1; }
cat <<ENV
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
export BINDGEN_EXTRA_CLANG_ARGS="--target=$clang_target -isystem $inc"
export CC_$t=clang-19 AR_$t=llvm-ar-19
export CFLAGS_$t="--target=$clang_target -isystem $here/darwin-shim -isystem $inc"
ENV
