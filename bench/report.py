#!/usr/bin/env python3
"""Turns bench/run.sh's figures (one JSON object per line: config, metric,
value) into the Markdown of docs/benchmarks.md: every figure, ztun's ratio
to the best peer and to the kernel path, and the issue's targets.

  report.py RESULTS --mode full --machine M --versions V --command C > table.md
  report.py RESULTS --splice docs/benchmarks.md < table.md
  report.py RESULTS --check-quick CONFIG...     # the CI smoke's assertions
"""
import argparse
import json
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
COUNTS = ("failures", "of rate test")
TUN_PEERS = ["tun2proxy", "tun2proxy-tuned", "badvpn"]
# metric: (label, unit, higher is better)
METRICS = {
    "tcp_up_gbps": ("TCP 1 stream up", "Gbit/s", True),
    "tcp_down_gbps": ("TCP 1 stream down (-R)", "Gbit/s", True),
    "tcp_up_p4_gbps": ("TCP 4 streams up", "Gbit/s", True),
    "udp_gbps": ("UDP received", "Gbit/s", True),
    "udp_loss_pct": ("UDP loss", "%", False),
    "rate_per_sec": ("connection rate", "conn/s", True),
    "rate_failed": ("failed connections", "of rate test", False),
    "latency_p50_us": ("connect+echo p50", "µs", False),
    "latency_p99_us": ("connect+echo p99", "µs", False),
    "close_server_first_failed": ("server close not seen ≤ 10 ms", "failures", False),
    "close_client_half_close_failed": ("client half-close not seen", "failures", False),
    "ping_rtt_us": ("ping RTT", "µs", False),
    "cpu_pct": ("relay CPU during TCP up", "% of a core", False),
    "mem_idle_mib": ("relay memory idle (RSS)", "MiB", False),
    "mem_peak_rate_mib": ("relay peak after conn-rate test (HWM)", "MiB", False),
    "mem_peak_mib": ("relay peak over the run (HWM)", "MiB", False),
}


def load(path):
    figures = {}
    for line in open(path, encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            figures.setdefault(r["config"], {})[r["metric"]] = r["value"]
    return figures


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float) and v < 10:
        return f"{v:.2f}"
    if isinstance(v, float) and v < 100:
        return f"{v:.1f}"
    return f"{v:,.0f}"


def best(figures, configs, metric):
    """The best (config, value) among configs that measured metric."""
    higher = METRICS[metric][2]
    seen = [(c, figures[c][metric]) for c in configs if figures.get(c, {}).get(metric) is not None]
    if not seen:
        return None, None
    return (max if higher else min)(seen, key=lambda cv: cv[1])


def ratio(a, b, metric):
    # A count of failures has no meaningful ratio: 0 against 8 is the point.
    if a is None or b in (None, 0) or METRICS[metric][1] in COUNTS:
        return "—"
    return f"{a / b:.2f}×"


def table(figures, args):
    configs = [c for c in figures if "skipped" not in figures[c]]
    out = [f"Run: `{args.command}` ({args.mode}). Machine: {args.machine}.", "", f"Versions: {args.versions}.", ""]
    skipped = [c for c in figures if "skipped" in figures[c]]
    if skipped:
        out += [f"Not run (no binary here): {', '.join(skipped)}.", ""]

    out += ["### Every figure", ""]
    cols = [m for m in METRICS if any(figures[c].get(m) is not None for c in configs)]
    out.append("| configuration | " + " | ".join(f"{METRICS[m][0]} ({METRICS[m][1]})" for m in cols) + " |")
    out.append("|---" * (len(cols) + 1) + "|")
    for c in configs:
        out.append(f"| {c} | " + " | ".join(fmt(figures[c].get(m)) for m in cols) + " |")

    out += ["", "### ztun against the best TUN peer, the kernel path and the SOCKS-only ceiling", ""]
    out.append("| figure | ztun | best TUN peer | ztun ÷ peer | kernel | ztun ÷ kernel | SOCKS-only (dante) | ztun ÷ SOCKS-only |")
    out.append("|---|---|---|---|---|---|---|---|")
    z = figures.get("ztun", {})
    for m in cols:
        if z.get(m) is None:
            continue
        peer, pv = best(figures, TUN_PEERS, m)
        kv = figures.get("kernel", {}).get(m)
        sv = figures.get("socks-only", {}).get(m)
        out.append(
            f"| {METRICS[m][0]} ({METRICS[m][1]}) | {fmt(z[m])} | {fmt(pv)}{f' ({peer})' if peer else ''} | "
            f"{ratio(z[m], pv, m)} | {fmt(kv)} | {ratio(z[m], kv, m)} | {fmt(sv)} | {ratio(z[m], sv, m)} |"
        )

    out += ["", "### The targets of issue 12", ""]
    out.append("| target | measured | met |")
    out.append("|---|---|---|")
    for target, measured, met in targets(figures):
        out.append(f"| {target} | {measured} | {'yes' if met else ('no' if met is not None else 'not measured')} |")
    return "\n".join(out) + "\n"


def targets(f):
    g = lambda c, m: f.get(c, {}).get(m)  # noqa: E731
    rows = []
    for m, word in [("tcp_up_gbps", "up"), ("tcp_down_gbps", "down")]:
        peer, pv = best(f, TUN_PEERS, m)
        z = g("ztun-1500", m)
        ok = None if z is None or not pv else z >= 3 * pv
        rows.append((f"TCP 1 stream {word} at MTU 1500 ≥ 3× the best TUN peer",
                     f"ztun-1500 {fmt(z)} vs {peer or 'no peer'} {fmt(pv)} Gbit/s = {ratio(z, pv, m)}", ok))
        s, z9 = g("socks-only", m), g("ztun", m)
        ok = None if z9 is None or not s else z9 >= 0.5 * s
        rows.append((f"TCP 1 stream {word} at the default MTU ≥ 50 % of the SOCKS-only ceiling",
                     f"ztun {fmt(z9)} vs {fmt(s)} Gbit/s = {ratio(z9, s, m)}", ok))
    peer, pv = best(f, TUN_PEERS + ["redsocks"], "rate_per_sec")
    z, zf = g("ztun", "rate_per_sec"), g("ztun", "rate_failed")
    ok = None if z is None or pv is None else (z >= pv and zf == 0)
    rows.append(("connection rate ≥ the best peer, 0 failures",
                 f"{fmt(z)} conn/s, {fmt(zf)} failed; best peer {peer} {fmt(pv)} conn/s", ok))
    a, b = g("ztun", "close_server_first_failed"), g("ztun", "close_client_half_close_failed")
    rows.append(("close propagation: 0 failures both ways", f"{fmt(a)} and {fmt(b)}",
                 None if a is None or b is None else a == 0 and b == 0))
    idle, peak = g("ztun", "mem_idle_mib"), g("ztun", "mem_peak_rate_mib")
    rows.append(("relay memory idle ≤ 8 MiB", f"{fmt(idle)} MiB", None if idle is None else idle <= 8))
    rows.append(("relay memory peak over the connection-rate test ≤ 64 MiB", f"{fmt(peak)} MiB",
                 None if peak is None else peak <= 64))
    zp, kp = g("ztun", "ping_rtt_us"), g("kernel", "ping_rtt_us")
    rows.append(("ping RTT in forward mode within 100 µs of the kernel path",
                 f"ztun {fmt(zp)} µs, kernel {fmt(kp)} µs",
                 None if zp is None or kp is None else zp - kp <= 100))
    return rows


def splice(path, text):
    try:
        doc = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        doc = "# Benchmarks\n"
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    open(path, "w", encoding="utf-8").write(doc)


def check_quick(figures, configs):
    problems = []
    for c in configs:
        got = figures.get(c, {})
        for m in ["rate_per_sec", "tcp_up_gbps", "close_server_first_failed"]:
            if got.get(m) is None:
                problems.append(f"{c}: no {m} figure")
        # microsocks closes both directions when one ends, so half-close
        # cannot pass through it, whoever relays to it (socks-only-microsocks
        # shows the same): the zero-failure rule is for dante and direct.
        if c.startswith("ztun") and c != "ztun-microsocks":
            for m in ["rate_failed", "close_server_first_failed", "close_client_half_close_failed"]:
                if got.get(m) != 0:
                    problems.append(f"{c}: {m} = {got.get(m)}, must be 0")
    for p in problems:
        print(f"bench --quick: {p}", file=sys.stderr)
    if not problems:
        print(f"bench --quick: every configuration ran ({', '.join(configs)}); ztun: 0 failed connections, 0 close-propagation failures")
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--machine", default="?")
    ap.add_argument("--versions", default="?")
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--splice", metavar="FILE")
    ap.add_argument("--check-quick", nargs="+", metavar="CONFIG")
    args = ap.parse_args()
    figures = load(args.results)
    if args.check_quick:
        return check_quick(figures, args.check_quick)
    if args.splice:
        splice(args.splice, sys.stdin.read())
        return 0
    sys.stdout.write(table(figures, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
