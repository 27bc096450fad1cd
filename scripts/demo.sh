#!/usr/bin/env bash
# The main job, as far as it goes today: build ztunctl, build the `up`
# request a user would send, show the exact dictionary (the XPC / Unix-socket
# wire form), decode it the way the helper does and round-trip it through
# the socket framing. The real demo (helper up, traffic through the tunnel,
# status, down) replaces this when the daemon lands (issue 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked -p ztunctl -p ztun-proto --examples --bins
ctl=target/debug/ztunctl
echo "==> ztunctl --dry-run up --name demo --route 203.0.113.0/24 --upstream socks5://alice:secret@192.0.2.10:1080"
"$ctl" --dry-run up --name demo --route 203.0.113.0/24 --upstream socks5://alice:secret@192.0.2.10:1080 | tee /tmp/ztun-demo-up.plist
echo "==> the helper's decoder and the Unix-socket framing"
target/debug/examples/roundtrip < /tmp/ztun-demo-up.plist
echo "==> a mistake is caught before anything is sent (exit 2)"
"$ctl" up --exclude 192.0.2.0/24 --route 203.0.113.0/24 || echo "(exit $?)"
echo "==> with no helper running, ztunctl says so (exit 3)"
"$ctl" --socket /tmp/ztun-demo-absent.sock status || echo "(exit $?)"
rm -f /tmp/ztun-demo-up.plist
