#!/usr/bin/env bash
# Runs each fuzz target for SECS seconds (default 60) and reports executions.
#   scripts/fuzz.sh              # every target, 60 s each
#   scripts/fuzz.sh 300 control_frame
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 7200   # 10M executions each, at most 2 h
# Needs the nightly toolchain (installed by rustup if missing) and cargo-fuzz.
# Crashes land in fuzz/artifacts/TARGET/; fix the bug, add a unit test, and
# keep the input in fuzz/regressions/TARGET/ so every run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(control_frame engine_packet rtmsg_decode xpc_bridge fake_dns)

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
    engine_packet)
      # Seeds: the engine's own test packets, one per file, length-prefixed.
      python3 - "$dir" <<'PY'
import pathlib, struct, sys
out = pathlib.Path(sys.argv[1])
def ipv4(proto, payload, src=bytes([198, 18, 0, 1]), dst=bytes([203, 0, 113, 5])):
    hdr = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst))
    s = sum(struct.unpack(">10H", hdr)); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    hdr[10:12] = struct.pack(">H", ~s & 0xffff)
    return bytes(hdr) + payload
def framed(*pkts):
    return b"\x00" + b"".join(struct.pack(">H", len(p)) + p for p in pkts)
echo = bytes([8, 0, 0, 0]) + struct.pack(">HH", 32065, 0) + bytes(range(56))
def l4(proto, seg, src=bytes([198, 18, 0, 1]), dst=bytes([203, 0, 113, 5])):
    # Fill the TCP/UDP checksum over the pseudo-header, so seeds are accepted.
    off = 16 if proto == 6 else 6
    data = src + dst + struct.pack(">BBH", 0, proto, len(seg)) + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return seg[:off] + struct.pack(">H", ~s & 0xffff) + seg[off + 2:]
syn = l4(6, struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 64240, 0, 0))
udp = l4(17, struct.pack(">HHHH", 40000, 53, 8 + 4, 0) + b"ztun")
for name, data in [("echo", framed(ipv4(1, echo))), ("syn", framed(ipv4(6, syn))), ("udp", framed(ipv4(17, udp))),
                   ("mixed", framed(ipv4(1, echo), ipv4(6, syn), ipv4(17, udp), ipv4(6, syn)))]:
    (out / name).write_bytes(data)
PY
      ;;
    rtmsg_decode)
      # Seeds: an RTM_ADD of 203.0.113.0/24 into utun4 (index 9) as the helper
      # writes it, and the kernel's RTM_GET reply naming utun4, laid out from
      # xnu route.h (92-byte rt_msghdr, host order, sockaddrs rounded to 4).
      python3 - "$dir" <<'PY'
import pathlib, struct, sys
out = pathlib.Path(sys.argv[1])
def sin(a): return struct.pack("<BB", 16, 2) + b"\0\0" + bytes(a) + b"\0" * 8
def sdl(index, name=b""):
    body = struct.pack("<BBHBBBB", 0, 18, index, 0, len(name), 0, 0) + name
    body = bytes([8 + len(name)]) + body[1:]
    return body + b"\0" * (-len(body) % 4)
def msg(kind, flags, addrs, sockaddrs, errno=0, pid=0, seq=1):
    body = b"".join(sockaddrs)
    hdr = struct.pack("<HBBHHiiiiiiI", 92 + len(body), 5, kind, 9, 0, flags, addrs, pid, seq, errno, 0, 0) + b"\0" * 56
    return hdr + body
add = msg(1, 0x801, 0x7, [sin([203, 0, 113, 0]), sdl(9), sin([255, 255, 255, 0])])
reply = msg(4, 0x841, 0x17, [sin([203, 0, 113, 0]), sdl(9), sin([255, 255, 255, 0]), sdl(9, b"utun4")], pid=42, seq=7)
(out / "add").write_bytes(add); (out / "get-reply").write_bytes(reply); (out / "batch").write_bytes(add + reply)
PY
      ;;
    fake_dns)
      # Seeds: dig's A and AAAA queries for www.example.com (RD, EDNS OPT),
      # and one for a name outside the route domain, from RFC 1035's layout.
      python3 - "$dir" <<'PY'
import pathlib, struct, sys
out = pathlib.Path(sys.argv[1])
def query(name, qtype, qid=0x1234):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1) + q + struct.pack(">HH", qtype, 1) + opt
for name, data in [("a", query("www.example.com", 1)), ("aaaa", query("www.example.com", 28)),
                   ("https", query("www.example.com", 65)), ("other", query("www.example.org", 1))]:
    (out / name).write_bytes(data)
PY
      ;;
    xpc_bridge)
      # Seeds: object trees in the target's own encoding (a tag byte: low
      # nibble the type, high nibble a count; see fuzz_targets/xpc_bridge.rs):
      # a status request, a watch request, and one carrying a file descriptor.
      python3 - "$dir" <<'PY'
import pathlib, struct, sys
out = pathlib.Path(sys.argv[1])
def s(text):
    b = text.encode(); b += b"\0" * (-len(b) % 3)  # strings come in 3-byte units
    return bytes([(len(b) // 3) << 4 | 2]) + b
def i64(n): return bytes([3]) + struct.pack("<q", n)
def d(*kv): return bytes([len(kv) << 4 | 0]) + b"".join(bytes([len(k)]) + k.encode() + v for k, v in kv)
fd = bytes([10 << 4 | 8])  # Unsupported(XpcType::ALL[10]): a file descriptor
for name, data in [("status", d(("v", i64(1)), ("op", s("status")))),
                   ("watch", d(("v", i64(1)), ("op", s("watch")), ("name", s("work")))),
                   ("fd", d(("v", i64(1)), ("op", s("status")), ("fd", fd)))]:
    (out / name).write_bytes(data)
PY
      ;;
  esac
}

for t in "${targets[@]}"; do
  seed "$t"
  log=$(mktemp)
  echo "==> fuzz $t for ${secs}s"
  limits=(-max_total_time="$secs" -rss_limit_mb=2048)
  [ -z "${FUZZ_RUNS:-}" ] || limits+=(-runs="$FUZZ_RUNS")
  if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- "${limits[@]}" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz $t: CRASH; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  echo "fuzz $t: ${done_line:-no summary} (${cov:-cov unknown}, $(grep -oE 'ft: [0-9]+' "$log" | tail -1 || true)), no crash"
  rm -f "$log"
done
