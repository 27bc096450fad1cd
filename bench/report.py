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
TUN_PEERS = ["tun2proxy", "tun2proxy-tuned", "hev", "hev-8500", "badvpn"]
# metric: (label, unit, higher is better)
METRICS = {
    "tcp_up_gbps": ("TCP 1 stream up", "Gbit/s", True),
    "tcp_down_gbps": ("TCP 1 stream down (-R)", "Gbit/s", True),
    "tcp_up_p4_gbps": ("TCP 4 streams up", "Gbit/s", True),
    "udp_0.5_gbps": ("UDP at 0.5 Gbit/s offered: received", "Gbit/s", True),
    "udp_0.5_loss_pct": ("UDP at 0.5: loss", "%", False),
    "udp_1_gbps": ("UDP at 1 Gbit/s offered: received", "Gbit/s", True),
    "udp_1_loss_pct": ("UDP at 1: loss", "%", False),
    "udp_2_gbps": ("UDP at 2 Gbit/s offered: received", "Gbit/s", True),
    "udp_2_loss_pct": ("UDP at 2: loss", "%", False),
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

    out += ["", "### The targets of issue 20", ""]
    out.append("| target | measured | met |")
    out.append("|---|---|---|")
    for target, measured, met in targets(figures):
        out.append(f"| {target} | {measured} | {'yes' if met else ('no' if met is not None else 'not measured')} |")
    return "\n".join(out) + "\n"


def at_least(a, b, share):
    """Whether a ≥ share × b; None when either is missing."""
    return None if a is None or not b else a >= share * b


def targets(f):
    g = lambda c, m: f.get(c, {}).get(m)  # noqa: E731
    rows = []
    zd, kd, zl = g("ztun-direct", "udp_1_gbps"), g("kernel", "udp_1_gbps"), g("ztun-direct", "udp_1_loss_pct")
    ok = at_least(zd, kd, 0.9)
    rows.append(("UDP direct at 1 Gbit/s offered: received ≥ 90 % of the kernel path, loss < 1 %",
                 f"ztun-direct {fmt(zd)} vs {fmt(kd)} Gbit/s = {ratio(zd, kd, 'udp_1_gbps')}, loss {fmt(zl)} %",
                 None if ok is None or zl is None else ok and zl < 1))
    for rate in ["0.5", "1", "2"]:
        m = f"udp_{rate}_gbps"
        z, s = g("ztun", m), g("socks-only", m)
        rows.append((f"UDP through dante at {rate} Gbit/s offered ≥ SOCKS-only UDP",
                     f"ztun {fmt(z)} vs {fmt(s)} Gbit/s = {ratio(z, s, m)}", at_least(z, s, 1)))
    for m, word in [("tcp_up_gbps", "up"), ("tcp_down_gbps", "down")]:
        z, s = g("ztun", m), g("socks-only", m)
        rows.append((f"TCP 1 stream {word} at the default MTU ≥ 90 % of SOCKS-only",
                     f"ztun {fmt(z)} vs {fmt(s)} Gbit/s = {ratio(z, s, m)}", at_least(z, s, 0.9)))
        z, h = g("ztun-1500", m), g("hev", m)
        rows.append((f"TCP 1 stream {word} at MTU 1500 ≥ 2× hev-socks5-tunnel at 1500",
                     f"ztun-1500 {fmt(z)} vs hev {fmt(h)} Gbit/s = {ratio(z, h, m)}", at_least(z, h, 2)))
        z, h = g("ztun", m), g("hev-8500", m)
        rows.append((f"TCP 1 stream {word} at ztun's default MTU ≥ 1.5× hev at its 8500",
                     f"ztun {fmt(z)} vs hev-8500 {fmt(h)} Gbit/s = {ratio(z, h, m)}", at_least(z, h, 1.5)))
    z, s = g("ztun", "tcp_up_p4_gbps"), g("socks-only", "tcp_up_p4_gbps")
    rows.append(("TCP 4 streams ≥ 70 % of SOCKS-only 4 streams",
                 f"ztun {fmt(z)} vs {fmt(s)} Gbit/s = {ratio(z, s, 'tcp_up_p4_gbps')}", at_least(z, s, 0.7)))
    z, zf, s = g("ztun", "rate_per_sec"), g("ztun", "rate_failed"), g("socks-only", "rate_per_sec")
    ok = at_least(z, s, 0.95)
    rows.append(("connection rate ≥ 95 % of SOCKS-only, 0 failures",
                 f"ztun {fmt(z)} vs {fmt(s)} conn/s = {ratio(z, s, 'rate_per_sec')}, {fmt(zf)} failed",
                 None if ok is None or zf is None else ok and zf == 0))
    a, b = g("ztun", "close_server_first_failed"), g("ztun", "close_client_half_close_failed")
    rows.append(("close propagation: 0 failures both ways", f"{fmt(a)} and {fmt(b)}",
                 None if a is None or b is None else a == 0 and b == 0))
    idle, peak = g("ztun", "mem_idle_mib"), g("ztun", "mem_peak_rate_mib")
    rows.append(("relay memory idle ≤ 8 MiB", f"{fmt(idle)} MiB", None if idle is None else idle <= 8))
    rows.append(("relay memory peak over the connection-rate test ≤ 64 MiB", f"{fmt(peak)} MiB",
                 None if peak is None else peak <= 64))
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
        wanted = ["rate_per_sec", "tcp_up_gbps", "close_server_first_failed"]
        if c != "redsocks" and not c.endswith("microsocks"):
            wanted.append("udp_1_gbps")
        for m in wanted:
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
