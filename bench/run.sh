#!/usr/bin/env bash
# Side-by-side benchmark: ztun beside its peers and the kernel path, in one
# run, on one box (docs/benchmarks.md). Root; own network namespaces only.
#
#   bench/run.sh            # the full run (about 22 minutes); writes docs/benchmarks.md
#   bench/run.sh --quick    # CI smoke (about 4 minutes): every configuration
#                           # runs briefly; fails unless ztun had 0 failed
#                           # connections and 0 close-propagation failures
#   bench/run.sh --only ztun,kernel     # some configurations
#   bench/run.sh --out FILE             # the table elsewhere (default: docs/benchmarks.md)
#   bench/run.sh --perf --only ztun     # also profile the relay (perf, cpu-clock) during TCP up
#                                       # and the connection-rate test: the top of each profile goes
#                                       # to target/bench-profile-CONFIG-{tcp-up,rate}.txt, the
#                                       # whole of it to .data beside it (perf report -i)
#
# Peers without a package (badvpn-tun2socks, hev-socks5-tunnel) run only when
# a prebuilt binary is found: badvpn-tun2socks on PATH; hev-socks5-tunnel at
# $HEV_SOCKS5_TUNNEL (an error if set and not executable), else on PATH,
# else target/bench-tools/bin/hev-socks5-tunnel. Otherwise they are listed
# as not run.
#
# Topology (documentation addresses only; the root namespace is untouched):
#
#   client ns (TUN + the relay under test)      proxy ns (SOCKS5 servers)         server ns
#   veth 198.51.100.1/24  <---------------->  198.51.100.2/24 | 192.0.2.1/24  <----> 192.0.2.2/24
#   default via 198.51.100.2                  danted :1080, microsocks :1081    lo 203.0.113.10
#                                             forwards IP (kernel path)        iperf3, zbench, whoami
#
# Before each configuration the path is proven: a "whoami" server in the
# server namespace answers with the source address it sees, which must be
# the proxy's (192.0.2.1) for every SOCKS configuration and the client's
# own (198.51.100.1) for the kernel path and ztun direct.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0 perf=0 only="" out=docs/benchmarks.md args="$*"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --perf) perf=1 ;;
    --only) only=${2:?--only needs a comma-separated list}; shift ;;
    --out) out=${2:?--out needs a file}; shift ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (it creates network namespaces)" >&2; exit 1; }
# hev-socks5-tunnel is neither in Debian nor on crates.io, and nothing here
# builds it: a binary built by hand from heiher/hev-socks5-tunnel is used.
if [ -n "${HEV_SOCKS5_TUNNEL:-}" ]; then
  if [ ! -f "$HEV_SOCKS5_TUNNEL" ] || [ ! -x "$HEV_SOCKS5_TUNNEL" ]; then
    echo "bench/run.sh: HEV_SOCKS5_TUNNEL=$HEV_SOCKS5_TUNNEL is not an executable file" >&2; exit 2
  fi
  hev=$(realpath "$HEV_SOCKS5_TUNNEL")
else
  hev=$(command -v hev-socks5-tunnel || true)
  [ -n "$hev" ] || [ ! -x "$root/target/bench-tools/bin/hev-socks5-tunnel" ] ||
    hev=$root/target/bench-tools/bin/hev-socks5-tunnel
fi

# What the suite needs, installed if missing (without starting services).
need=()
for tool in ip:iproute2 iperf3:iperf3 curl:curl python3:python3 danted:dante-server \
  microsocks:microsocks proxychains4:proxychains4 redsocks:redsocks iptables:iptables ping:iputils-ping \
  perf:linux-perf; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
scripts/apt-install.sh "${need[@]}"
# tun2proxy is not in Debian: built from crates.io, pinned, kept beside the
# build (outside the repository's tracked files).
TUN2PROXY_VERSION=0.8.7
tools=$root/target/bench-tools
tun2proxy=$tools/bin/tun2proxy-bin
if [ ! -x "$tun2proxy" ] || ! "$tun2proxy" --version 2>/dev/null | grep -q "$TUN2PROXY_VERSION"; then
  echo "==> cargo install tun2proxy $TUN2PROXY_VERSION (once; a few minutes)"
  cargo install --quiet --locked --root "$tools" tun2proxy --version "$TUN2PROXY_VERSION"
fi
badvpn=$(command -v badvpn-tun2socks || true)

echo "==> building ztun (release) and zbench"
cargo build --quiet --locked --release -p ztun-helper -p ztunctl -p ztun-bench
bin=$root/target/release

configs_all=(kernel socks-only socks-only-microsocks ztun ztun-1500 ztun-microsocks ztun-direct
  tun2proxy tun2proxy-tuned hev hev-8500 redsocks badvpn)
if [ -n "$only" ]; then IFS=, read -r -a configs <<<"$only"; else configs=("${configs_all[@]}"); fi
for c in "${configs[@]}"; do
  [[ " ${configs_all[*]} " == *" $c "* ]] || { echo "bench/run.sh: unknown configuration $c (one of: ${configs_all[*]})" >&2; exit 2; }
done

if [ $quick = 1 ]; then
  secs=2 rate_n=300 lat_n=50 close_n=10 ping_n=20 udp_secs=1 udp_rates=(1)
else
  secs=10 rate_n=2000 lat_n=500 close_n=50 ping_n=200 udp_secs=5 udp_rates=(0.5 1 2)
fi

C=zb-$$-c P=zb-$$-p S=zb-$$-s
SERVER=203.0.113.10 PROXY=198.51.100.2 PROXY_OUT=192.0.2.1 CLIENT=198.51.100.1
work=$(mktemp -d /tmp/ztun-bench.XXXXXX)
results=$work/results.jsonl
: >"$results"
pids=()     # long-lived processes of the run, stopped by pid at exit
cfg_pids=() # processes of the configuration being measured
stop() { for pid in "$@"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
cleanup() {
  stop "${cfg_pids[@]}" "${pids[@]}"
  for ns in "$C" "$P" "$S"; do
    # Children the processes above left behind (danted's), by pid.
    # shellcheck disable=SC2046 # one pid per word
    stop $(ip netns pids "$ns" 2>/dev/null)
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_c() { ip netns exec "$C" "$@"; }
in_p() { ip netns exec "$P" "$@"; }
in_s() { ip netns exec "$S" "$@"; }
# spawn NS LOG CMD...: starts CMD in NS in the background; its pid in $spawned.
spawn() { local ns=$1 log=$2; shift 2; ip netns exec "$ns" "$@" >"$log" 2>&1 & spawned=$!; }
wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
  local until=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt "$until" ] || return 1
    sleep 0.1
  done
}

echo "==> namespaces $C (client) <-> $P (proxy) <-> $S (server)"
for ns in "$C" "$P" "$S"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$C" link add veth-c type veth peer name veth-pc netns "$P"
ip -n "$P" link add veth-ps type veth peer name veth-s netns "$S"
ip -n "$C" addr add $CLIENT/24 dev veth-c
ip -n "$P" addr add $PROXY/24 dev veth-pc
ip -n "$P" addr add $PROXY_OUT/24 dev veth-ps
ip -n "$S" addr add 192.0.2.2/24 dev veth-s
ip -n "$S" addr add $SERVER/32 dev lo
for l in "$C veth-c" "$P veth-pc" "$P veth-ps" "$S veth-s"; do ip -n "${l% *}" link set "${l#* }" up; done
ip -n "$C" route add default via $PROXY
ip -n "$P" route add 203.0.113.0/24 via 192.0.2.2
ip -n "$S" route add 198.51.100.0/24 via $PROXY_OUT
in_p sysctl -qw net.ipv4.ip_forward=1

echo "==> servers: iperf3, zbench, whoami on $SERVER; danted :1080 and microsocks :1081 on $PROXY"
spawn "$S" "$work/iperf3.log" iperf3 -s -B $SERVER -p 5201; pids+=("$spawned")
spawn "$S" "$work/zbench-serve.log" "$bin/zbench" serve --listen $SERVER:7000; pids+=("$spawned")
spawn "$S" "$work/whoami.log" python3 -c '
import socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + self.client_address[0].encode())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("203.0.113.10", 8080), H).serve_forever()'
pids+=("$spawned")
cat >"$work/danted.conf" <<EOF
logoutput: $work/danted.log
internal: $PROXY port = 1080
external: $PROXY_OUT
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 198.51.100.0/24 to: 0/0 }
socks pass { from: 198.51.100.0/24 to: 0/0 command: connect udpassociate }
socks pass { from: 0/0 to: 198.51.100.0/24 command: udpreply }
EOF
spawn "$P" "$work/danted.out" danted -f "$work/danted.conf" -p "$work/danted.pid" -N 2; pids+=("$spawned")
spawn "$P" "$work/microsocks.log" microsocks -i $PROXY -p 1081 -b $PROXY_OUT; pids+=("$spawned")
wait_for 10 in_s "$bin/zbench" latency --target $SERVER:7000 --count 1 --strict ||
  { echo "bench: zbench server did not come up" >&2; exit 1; }
wait_for 10 in_c curl -sf --max-time 1 --socks5 $PROXY:1080 http://$SERVER:8080/ ||
  { echo "bench: danted did not come up; see $work/danted.log" >&2; cat "$work/danted.out" >&2; exit 1; }
wait_for 10 in_c curl -sf --max-time 1 --socks5 $PROXY:1081 http://$SERVER:8080/ ||
  { echo "bench: microsocks did not come up" >&2; exit 1; }

# record CONFIG METRIC VALUE
record() { printf '{"config":"%s","metric":"%s","value":%s}\n' "$1" "$2" "$3" >>"$results"; }
# jget EXPR: EXPR over iperf3's JSON (as d) on stdin; empty when it does not apply.
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1" 2>/dev/null || true; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
vm() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Per configuration: how the client reaches the server (a prefix for
# commands, empty when the relay is transparent), which SOCKS server, the
# relay's pid, and what source address the server must see.
socks_arg=() wrap=() relay_pid="" want_src=""

start_ztun() { # start_ztun UPSTREAM MTU
  local sock=$work/ztun.sock
  spawn "$C" "$work/ztun-helper.log" "$bin/ztun-helper" --socket "$sock" --state-dir "$work/ztun-state"
  cfg_pids+=("$spawned"); relay_pid=$spawned
  wait_for 10 test -S "$sock" || { echo "bench: ztun-helper did not start; see $work/ztun-helper.log" >&2; return 1; }
  local up=(up --name bench --route 203.0.113.0/24 --icmp forward --mtu "$2")
  [ "$1" = direct ] || up+=(--upstream "$1")
  in_c "$bin/ztunctl" --socket "$sock" "${up[@]}" >/dev/null
}

start_tun2proxy() { # start_tun2proxy [EXTRA ARGS]
  # tun2proxy opens the persistent device made here; its address and route
  # are set here too (no --setup: that rewrites the namespace's DNS setup).
  in_c ip tuntap add mode tun name t2p0
  in_c ip addr add 198.18.0.1/32 peer 198.18.0.2 dev t2p0
  in_c ip link set t2p0 up
  in_c ip route add 203.0.113.0/24 dev t2p0
  spawn "$C" "$work/tun2proxy.log" "$tun2proxy" --tun t2p0 --proxy socks5://$PROXY:1080 "$@"
  cfg_pids+=("$spawned"); relay_pid=$spawned
}

start_redsocks() {
  cat >"$work/redsocks.conf" <<EOF
base { log_debug = off; log_info = off; log = stderr; daemon = off; redirector = iptables; }
redsocks { local_ip = 127.0.0.1; local_port = 12345; ip = $PROXY; port = 1080; type = socks5; }
EOF
  spawn "$C" "$work/redsocks.log" redsocks -c "$work/redsocks.conf"
  cfg_pids+=("$spawned"); relay_pid=$spawned
  in_c iptables -t nat -A OUTPUT -p tcp -d 203.0.113.0/24 -j REDIRECT --to-ports 12345
}

start_badvpn() {
  in_c ip tuntap add mode tun name bv0
  in_c ip addr add 198.18.0.1/30 dev bv0
  in_c ip link set bv0 up
  in_c ip route add 203.0.113.0/24 via 198.18.0.2 dev bv0
  spawn "$C" "$work/badvpn.log" "$badvpn" --tundev bv0 --netif-ipaddr 198.18.0.2 --netif-netmask 255.255.255.252 \
    --socks-server-addr $PROXY:1080 --socks5-udp --loglevel error
  cfg_pids+=("$spawned"); relay_pid=$spawned
}

start_hev() { # start_hev MTU
  # hev makes its TUN device (not persistent: gone when it exits) and sets
  # its MTU, its address 198.18.0.1/32 and the link up; the route is set
  # here once the link is up, as for tun2proxy. One process, one queue: a
  # process is one thread, and multi-queue only lets several processes
  # share the device (two of them gave 4 streams about +30 % at MTU 1500,
  # nothing at 8500 nor for 1 stream, on 2 vCPU). UDP goes by UDP ASSOCIATE
  # ('udp'); the rest is hev's defaults.
  cat >"$work/hev.yml" <<EOF
tunnel:
  name: hev0
  mtu: $1
  multi-queue: false
  ipv4: 198.18.0.1
socks5:
  address: $PROXY
  port: 1080
  udp: 'udp'
misc:
  log-file: stderr
  log-level: warn
EOF
  spawn "$C" "$work/hev.log" "$hev" "$work/hev.yml"
  cfg_pids+=("$spawned"); relay_pid=$spawned
  wait_for 10 link_up hev0 || { echo "bench: hev-socks5-tunnel did not bring hev0 up; see $work/hev.log" >&2; cat "$work/hev.log" >&2; return 1; }
  in_c ip route add 203.0.113.0/24 dev hev0
}
link_up() { in_c ip -o link show dev "$1" up | grep -q .; }

stop_config() {
  stop "${cfg_pids[@]}"; cfg_pids=()
  in_c iptables -t nat -F OUTPUT 2>/dev/null || true
  for dev in t2p0 bv0 hev0; do in_c ip link del "$dev" 2>/dev/null || true; done
  rm -rf "$work/ztun-state" "$work/ztun.sock"
}

setup() { # setup CONFIG: starts it; returns 3 when it cannot run here (why in $skip_why)
  socks_arg=() wrap=() relay_pid="" want_src=$PROXY_OUT skip_why=
  case $1 in
    kernel) want_src=$CLIENT ;;
    socks-only) socks_arg=(--socks "$PROXY:1080") wrap=(proxychains4 -q -f "$work/pc-1080.conf") ;;
    socks-only-microsocks) socks_arg=(--socks "$PROXY:1081") wrap=(proxychains4 -q -f "$work/pc-1081.conf") ;;
    ztun) start_ztun socks5://$PROXY:1080 9000 ;;
    ztun-1500) start_ztun socks5://$PROXY:1080 1500 ;;
    ztun-microsocks) start_ztun socks5://$PROXY:1081 9000 ;;
    ztun-direct) start_ztun direct 9000; want_src=$CLIENT ;;
    tun2proxy) start_tun2proxy ;;
    # Its best settings: more sessions than the default 200, and an MSS
    # announced to the kernel side (by default it announces none, so the
    # client's stack falls back to 536-byte segments).
    tun2proxy-tuned) start_tun2proxy --max-sessions 4096 --tcp-mss 1460 ;;
    hev) [ -n "$hev" ] || { skip_why=$hev_missing; return 3; }; start_hev 1500 ;;
    # The MTU its README and its default configuration use.
    hev-8500) [ -n "$hev" ] || { skip_why=$hev_missing; return 3; }; start_hev 8500 ;;
    redsocks) start_redsocks ;;
    badvpn)
      skip_why="no badvpn-tun2socks binary (not packaged in Debian; put one on PATH to include it)"
      [ -n "$badvpn" ] || return 3
      start_badvpn
      ;;
  esac
}
hev_missing="no hev-socks5-tunnel binary (neither packaged nor built here: set HEV_SOCKS5_TUNNEL, put one on PATH or at target/bench-tools/bin/ to include it)"
for port in 1080 1081; do
  printf 'strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 %s %s\n' \
    $PROXY $port >"$work/pc-$port.conf"
done

# The path, proven: the source address the server sees.
prove_path() {
  local curl=(curl -sf --max-time 2)
  [ ${#socks_arg[@]} = 0 ] || curl+=(--socks5 "${socks_arg[1]}")
  local seen=""
  wait_for 10 in_c "${curl[@]}" http://$SERVER:8080/ || true
  seen=$(in_c "${curl[@]}" http://$SERVER:8080/ || true)
  if [ "$seen" != "$want_src" ]; then
    echo "bench: $1: the server saw '${seen:-nothing}', expected $want_src: the path is not what the configuration claims" >&2
    return 1
  fi
  echo "    path proven: the server sees $seen"
}

iperf() { # iperf CONFIG METRIC ARGS...: runs iperf3 (TCP), records Gbit/s
  local cfg=$1 metric=$2; shift 2
  local json
  if ! json=$(in_c timeout $((secs + 30)) "${wrap[@]}" iperf3 -c $SERVER -p 5201 -t "$secs" -J "$@" 2>/dev/null); then
    echo "    $metric: iperf3 failed" >&2
    record "$cfg" "$metric" null
    return
  fi
  local gbps
  gbps=$(jget '"%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9)' <<<"$json")
  if [ -z "$gbps" ]; then
    echo "    $metric: iperf3 gave no result: $(jget 'd.get("error", "no summary")' <<<"$json")" >&2
    record "$cfg" "$metric" null
    return
  fi
  record "$cfg" "$metric" "$gbps"
  echo "    $metric: $gbps Gbit/s"
}

zb() { # zb CONFIG SUBCOMMAND ARGS...: one zbench test, its JSON fields recorded
  local cfg=$1 sub=$2; shift 2
  local json
  json=$(in_c timeout 300 "$bin/zbench" "$sub" --target $SERVER:7000 "${socks_arg[@]}" "$@") || json="{}"
  echo "    $sub: $json"
  python3 - "$cfg" "$sub" "$json" >>"$results" <<'PY'
import json, sys
cfg, sub, line = sys.argv[1:]
d = json.loads(line or "{}")
if sub == "udp":
    # One metric pair per offered rate: udp_1_gbps, udp_1_loss_pct, ...
    rate = "%g" % d.get("offered_gbps", 0)
    for k, name in [("received_gbps", "gbps"), ("loss_pct", "loss_pct")]:
        print(json.dumps({"config": cfg, "metric": f"udp_{rate}_{name}", "value": d.get(k)}))
    sys.exit()
keys = {"rate": ["per_sec", "failed"], "latency": ["p50_us", "p99_us", "failed"],
        "close": ["server_first_failed", "client_half_close_failed", "server_first_max_us", "client_half_close_max_us"]}[sub]
for k in keys:
    print(json.dumps({"config": cfg, "metric": f"{sub}_{k}", "value": d.get(k)}))
PY
}

profiler="" profile=""
profile_start() { # profile_start NAME: with --perf, profiles the relay until profile_stop
  [ $perf = 1 ] && [ -n "$relay_pid" ] || return 0
  profile=target/bench-profile-$1
  perf record -q -F 999 -g -p "$relay_pid" -o "$profile.data" >/dev/null 2>&1 &
  profiler=$!
}
profile_stop() { # the top of the profile to target/bench-profile-NAME.txt, beside its data
  [ -n "$profiler" ] || return 0
  kill -INT "$profiler" 2>/dev/null || true
  wait "$profiler" || true
  profiler=""
  perf report -q -i "$profile.data" --no-children --percent-limit 1 --stdio -g none \
    --sort dso,symbol 2>/dev/null | sed -E '/^$/d; s/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' \
    >"$profile.txt" || true
  echo "    profile: $profile.txt (perf report -i $profile.data)"
}

measure() { # measure CONFIG
  local cfg=$1 t0 t1 w0 w1
  if [ -n "$relay_pid" ]; then
    sleep 0.5
    record "$cfg" mem_idle_mib "$(vm "$relay_pid" VmRSS)"
  fi
  profile_start "$cfg-rate"
  zb "$cfg" rate --count "$rate_n" --concurrency 32
  profile_stop
  [ -z "$relay_pid" ] || record "$cfg" mem_peak_rate_mib "$(vm "$relay_pid" VmHWM)"
  zb "$cfg" close --count "$close_n"
  zb "$cfg" latency --count "$lat_n"
  [ -z "$relay_pid" ] || { t0=$(ticks "$relay_pid"); w0=$(date +%s.%N); }
  profile_start "$cfg-tcp-up"
  iperf "$cfg" tcp_up_gbps
  profile_stop
  if [ -n "$relay_pid" ]; then
    t1=$(ticks "$relay_pid"); w1=$(date +%s.%N)
    record "$cfg" cpu_pct "$(python3 -c 'import os, sys; t1, t0, w1, w0 = map(float, sys.argv[1:]); print("%.0f" % ((t1 - t0) / os.sysconf("SC_CLK_TCK") / (w1 - w0) * 100))' "$t1" "$t0" "$w1" "$w0")"
  fi
  if [ $quick = 0 ]; then
    iperf "$cfg" tcp_down_gbps -R
    iperf "$cfg" tcp_up_p4_gbps -P 4
    case $cfg in
      kernel | ztun | ztun-1500 | ztun-direct)
        local rtt
        rtt=$(in_c ping -q -c "$ping_n" -i 0.01 $SERVER | awk -F/ '/^rtt/ { printf "%.0f", $5 * 1000 }')
        record "$cfg" ping_rtt_us "${rtt:-null}"
        echo "    ping: ${rtt:-?} us average"
        ;;
    esac
  fi
  case $cfg in
    # redsocks relays TCP only, and microsocks has no UDP ASSOCIATE.
    redsocks | *microsocks) ;;
    *) for gbps in "${udp_rates[@]}"; do zb "$cfg" udp --gbps "$gbps" --len 1400 --secs "$udp_secs"; done ;;
  esac
  [ -z "$relay_pid" ] || record "$cfg" mem_peak_mib "$(vm "$relay_pid" VmHWM)"
}

ran=()
for cfg in "${configs[@]}"; do
  echo "==> $cfg"
  rc=0
  setup "$cfg" || rc=$?
  if [ $rc = 3 ]; then
    echo "    skipped: $skip_why"
    record "$cfg" skipped 1
    continue
  fi
  [ $rc = 0 ] || { echo "bench: $cfg did not start" >&2; exit 1; }
  prove_path "$cfg"
  measure "$cfg"
  [ -z "$relay_pid" ] || kill -0 "$relay_pid" 2>/dev/null || { echo "bench: the $cfg relay died during the run" >&2; exit 1; }
  stop_config
  ran+=("$cfg")
done

machine="$(nproc) vCPU, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# hev-socks5-tunnel --version prints "Version: 2.15.0 1d33451" and exits non-zero.
hev_version=""
[ -z "$hev" ] || hev_version="hev-socks5-tunnel $( ("$hev" --version 2>&1 || true) | sed -n 's/^Version: //p'), "
versions="ztun $(git describe --always --dirty 2>/dev/null || echo ?), rustc $(rustc --version | cut -d' ' -f2), tun2proxy $TUN2PROXY_VERSION, $hev_version$(danted -v 2>&1 | head -1 | xargs), microsocks $(dpkg-query -W -f '${Version}' microsocks 2>/dev/null), redsocks $(dpkg-query -W -f '${Version}' redsocks 2>/dev/null), iperf3 $(dpkg-query -W -f '${Version}' iperf3 2>/dev/null)"
mode=full; [ $quick = 0 ] || mode=quick
python3 bench/report.py "$results" --mode "$mode" --machine "$machine" --versions "$versions" \
  --command "bench/run.sh${args:+ $args}" >"$work/table.md"
cat "$work/table.md"
if [ $quick = 1 ]; then
  python3 bench/report.py "$results" --check-quick "${ran[@]}"
else
  python3 bench/report.py "$results" --splice "$out" <"$work/table.md"
  cp "$results" "${out%.md}.jsonl"
  echo "==> written to $out (raw figures: ${out%.md}.jsonl)"
fi
