#!/usr/bin/env bash
# The whole test suite: unit, property, golden-fixture and CLI tests for
# every crate, the packaging checks (the macOS installer's dry run, and the
# .deb built, installed into a throwaway root and run), and the end-to-end
# tests, which need root for their network namespaces (without root they
# skip loudly; under CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust with rustup first" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then
  # What the end-to-end tests run: real clients and servers from Debian.
  # SOCKS5: microsocks, danted (dante-server; openssl hashes its test user's
  # password). HTTP CONNECT: tinyproxy. DNS: dnsmasq from dnsmasq-base,
  # which is the program alone: the dnsmasq package would also install and
  # start a system resolver. apt-install.sh keeps dante-server and
  # tinyproxy from starting daemons of their own.
  missing=()
  for tool in ip:iproute2 ping:iputils-ping iperf3:iperf3 curl:curl setpriv:util-linux python3:python3 \
    microsocks:microsocks danted:dante-server dnsmasq:dnsmasq-base tcpdump:tcpdump dig:bind9-dnsutils \
    openssl:openssl systemd-analyze:systemd tinyproxy:tinyproxy nft:nftables; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  scripts/apt-install.sh "${missing[@]}"
fi
# The end-to-end tests drive the real binaries: build them first.
cargo build --workspace --locked --bins --quiet
# tests/deb.rs installs and runs the real package (release build, cargo-deb
# installed if missing); it needs dpkg, so Debian and Ubuntu only.
if command -v dpkg-deb >/dev/null; then
  ZTUN_DEB=$(scripts/build-deb.sh)
  export ZTUN_DEB
else
  echo "test.sh: no dpkg-deb here, so the .deb is not built and tests/deb.rs skips (it fails under CI=true)" >&2
fi
# The shared daemon scenarios append how many ran on each platform here.
scenarios=target/tmp/ztun-scenarios.txt
rm -f "$scenarios"
cargo test --workspace --locked --all-targets --no-fail-fast 2>&1 | tee /tmp/ztun-test.log | grep -E '^(test result|running|error|failures:|---- )|panicked'
# Sum of all "test result" lines, so a run that executes no test is visible.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i; exit (f > 0 || p == 0) }' /tmp/ztun-test.log
# The macOS platform (on the xnu model) must run every shared scenario the
# Linux platform runs (the Linux run needs root).
if [ -f "$scenarios" ]; then
  cat "$scenarios"
  if [ "$(id -u)" = 0 ] && { [ "$(wc -l <"$scenarios")" != 2 ] || [ "$(awk '{ print $1 }' "$scenarios" | sort -u | wc -l)" != 1 ]; }; then
    echo "test.sh: the shared scenarios must run on both platforms, the same number on each" >&2
    exit 1
  fi
else
  echo "test.sh: no shared daemon scenario ran" >&2
  exit 1
fi
