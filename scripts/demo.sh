#!/usr/bin/env bash
# The main job, end to end, on a Linux machine as root: two private network
# namespaces (a client that runs ztun-helper, a server with a real HTTP
# server on 203.0.113.5), a tunnel that routes only 203.0.113.0/24, real
# ping and curl through it, status, down. Nothing touches the root
# namespace; everything started is stopped by pid and the namespaces are
# deleted, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it creates network namespaces)" >&2; exit 1; }
for tool in ip ping curl python3; do
  command -v "$tool" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iputils-ping curl >/dev/null; break; }
done
echo "==> building ztun-helper and ztunctl"
cargo build --quiet --locked -p ztun-helper -p ztunctl
bin=$PWD/target/debug

c=ztun-demo-client-$$ s=ztun-demo-server-$$
work=$(mktemp -d /tmp/ztun-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  ip netns del "$c" 2>/dev/null || true
  ip netns del "$s" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> namespaces: $c (helper, 198.51.100.1) <-> $s (server 203.0.113.5, gateway 198.51.100.2)"
ip netns add "$c"; ip netns add "$s"
ip -n "$c" link set lo up; ip -n "$s" link set lo up
ip -n "$c" link add veth-c type veth peer name veth-s netns "$s"
ip -n "$c" addr add 198.51.100.1/24 dev veth-c; ip -n "$c" link set veth-c up
ip -n "$s" addr add 198.51.100.2/24 dev veth-s; ip -n "$s" link set veth-s up
ip -n "$s" addr add 203.0.113.5/24 dev lo
ip -n "$c" route add default via 198.51.100.2

head -c 10485760 /dev/urandom > "$work/file"
ip netns exec "$s" python3 -m http.server --bind 203.0.113.5 8080 --directory "$work" >"$work/http.log" 2>&1 &
pids+=($!)

ctl() { ip netns exec "$c" "$bin/ztunctl" --socket "$work/control.sock" "$@"; }
ip netns exec "$c" "$bin/ztun-helper" --socket "$work/control.sock" --state-dir "$work/state" 2>"$work/helper.log" &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/control.sock" ] && break; sleep 0.1; done

echo "==> ztunctl up --name demo --route 203.0.113.0/24 --icmp forward"
ctl up --name demo --route 203.0.113.0/24 --icmp forward
echo "==> the client namespace's routes"
ip -n "$c" route

echo "==> ping 203.0.113.5 through the tunnel (forward mode: real echoes, real round trips)"
ip netns exec "$c" ping -c 3 -i 0.2 203.0.113.5

echo "==> curl a 10 MiB file through the tunnel"
for _ in $(seq 50); do ip netns exec "$s" curl -s -o /dev/null http://203.0.113.5:8080/ && break; sleep 0.1; done
ip netns exec "$c" curl -sS -o "$work/got" -w "    %{size_download} bytes in %{time_total} s (%{speed_download} B/s)\n" http://203.0.113.5:8080/file
want=$(sha256sum < "$work/file" | cut -d' ' -f1); got=$(sha256sum < "$work/got" | cut -d' ' -f1)
if [ "$want" != "$got" ]; then echo "sha256 MISMATCH: $want != $got" >&2; exit 1; fi
echo "    sha256 matches: $got"
echo "==> the server saw the helper's own address, not the tunnel's (NAT by construction)"
grep -o '^198\.51\.100\.1 ' "$work/http.log" | head -1

echo "==> ztunctl status"
ctl status
echo "==> ztunctl down demo"
ctl down demo
echo "==> the client namespace's routes after down"
ip -n "$c" route
echo "==> demo finished"
