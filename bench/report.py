#!/usr/bin/python3
"""The report of bench/run.sh (docs/benchmarks.md), and the small parsers it uses.

  report.py build OUT_DIR [--check]   OUT_DIR/raw/results.jsonl -> results.json,
                                      report.md, *.png; --check: exit 1 when a
                                      workload that ran lacks an expected number
  report.py cdf SOCKPERF_FULL_LOG OUT.json   latency quantiles of one sockperf run
  report.py iperf3 < iperf3 -J output        "Gbit/s bytes" received
  report.py gbench engine|passthrough < Google Benchmark JSON   "metric value" lines

Run with /usr/bin/python3 (Debian's python3-matplotlib; Agg backend, no display).
"""
import json
import math
import os
import statistics
import sys

STACKS = ("shunt", "kernel")

# metric -> (label, unit, better): better is "higher" or "lower".
METRICS = {
    "rps": ("throughput", "req/s", "higher"),
    "lat_p50_us": ("wrk latency p50", "µs", "lower"),
    "lat_p99_us": ("wrk latency p99", "µs", "lower"),
    "srv_cpu_us": ("server CPU (processes, user+sys)", "µs/op", "lower"),
    "srv_user_us": ("server CPU, user", "µs/op", "lower"),
    "srv_sys_us": ("server CPU, system", "µs/op", "lower"),
    "cpuS_busy_us": ("server CPU core busy (/proc/stat)", "µs/op", "lower"),
    "cpuS_softirq_us": ("server CPU core softirq (/proc/stat)", "µs/op", "lower"),
    "cpuC_busy_us": ("client CPU core busy (/proc/stat)", "µs/op", "lower"),
    "cpuC_softirq_us": ("client CPU core softirq (/proc/stat)", "µs/op", "lower"),
    "machine_busy_us": ("whole machine busy (/proc/stat)", "µs/op", "lower"),
    "srv_cores": ("server processes' CPU", "cores", "lower"),
    "other_stack_cores": ("the other stack's idle servers' CPU", "cores", "lower"),
    "ops": ("throughput", "ops/s", "higher"),
    "p50_ms": ("redis-benchmark latency p50", "ms", "lower"),
    "p50_us": ("latency p50", "µs", "lower"),
    "p99_us": ("latency p99", "µs", "lower"),
    "p999_us": ("latency p99.9", "µs", "lower"),
    "avg_us": ("latency mean", "µs", "lower"),
    "gbps": ("throughput", "Gbit/s", "higher"),
    "mbps": ("throughput", "MB/s", "higher"),
    "seconds": ("time", "s", "lower"),
    "dropped_packets": ("packets nftables dropped", "packets", "none"),
    "rx_drops": ("frames the server's veth dropped (shunt: no room in the AF_XDP socket)", "frames", "lower"),
    "active_conns": ("connections open", "", "higher"),
    "shuntd_rss_kib": ("shuntd VmRSS", "KiB", "lower"),
    "shuntd_rss_per_conn_kib": ("shuntd VmRSS growth per connection", "KiB", "lower"),
    "shuntd_anon_per_conn_kib": ("shuntd RssAnon growth per connection", "KiB", "lower"),
    "shuntd_shmem_per_conn_kib": ("shuntd RssShmem growth per connection", "KiB", "lower"),
    "nginx_rss_per_conn_kib": ("nginx worker VmRSS growth per connection", "KiB", "lower"),
    "txn_per_s": ("64 B request/response", "txn/s", "higher"),
    "cycles_per_txn": ("TSC cycles per transaction", "cycles", "lower"),
    "socket_errors": ("wrk socket errors", "", "lower"),
}

MAIN_CPU = ["srv_cpu_us", "machine_busy_us"]
CPU_METRICS = ["srv_cpu_us", "srv_user_us", "srv_sys_us", "cpuS_busy_us", "cpuS_softirq_us",
               "cpuC_busy_us", "cpuC_softirq_us", "machine_busy_us", "other_stack_cores"]

# workload -> title, what "op" is, metrics shown (in order), metrics every ok trial must have.
WORKLOADS = {
    "nginx-keepalive": dict(
        title="nginx, 1 KiB file, keep-alive (wrk -t1)", op="request",
        metrics=["rps", "lat_p50_us", "lat_p99_us"] + MAIN_CPU, cpu=True,
        required=["rps", "srv_cpu_us", "machine_busy_us"]),
    "nginx-close": dict(
        title="nginx, 1 KiB file, a connection per request (wrk -H 'Connection: close')", op="connection",
        metrics=["rps", "lat_p50_us"] + MAIN_CPU, cpu=True, required=["rps", "srv_cpu_us"]),
    "conn-scale": dict(
        title="nginx keep-alive, 100 to 10,000 concurrent connections (steady state: responses counted as they reach the client)", op="request",
        metrics=["rps", "active_conns", "shuntd_rss_per_conn_kib", "shuntd_anon_per_conn_kib",
                 "shuntd_shmem_per_conn_kib", "nginx_rss_per_conn_kib",
                 "srv_cpu_us", "machine_busy_us"], cpu=True,
        required=["rps", "active_conns", "nginx_rss_per_conn_kib"],
        required_shunt=["shuntd_rss_per_conn_kib"]),
    "bulk-curl": dict(
        title="bulk, nginx and curl (download: the server sends)", op="MiB",
        metrics=["mbps", "seconds", "rx_drops"] + MAIN_CPU, cpu=True, required=["mbps", "seconds"]),
    "loss": dict(
        title="a file under random loss both ways (nftables on the kernel host), nginx and curl", op="MiB",
        metrics=["seconds", "mbps", "dropped_packets"], required=["seconds", "mbps"]),
    "memcached": dict(
        title="memcached -t 4, memcaslap (-T 1 -c 32, 90 % get)", op="operation",
        metrics=["ops"] + MAIN_CPU, cpu=True, required=["ops", "srv_cpu_us"]),
    "redis": dict(
        title="redis-server, redis-benchmark (-c 50)", op="operation",
        metrics=["ops", "p50_ms"] + MAIN_CPU, cpu=True, required=["ops", "srv_cpu_us"]),
    "sockperf": dict(
        title="sockperf ping-pong (pp) and under-load (ul), TCP and UDP, over the veth", op="message",
        metrics=["p50_us", "p99_us", "p999_us", "avg_us"], required=["p50_us", "p99_us", "p999_us"]),
    "bulk-iperf3": dict(
        title="bulk, iperf3 (download: the server sends, -R)", op="MiB",
        metrics=["gbps"] + MAIN_CPU, cpu=True, required=["gbps"]),
    "nginx-restart": dict(
        title="nginx keep-alive c=32 in the restart layout of bench/nginx_vs_kernel.sh", op="request",
        metrics=["rps", "lat_p50_us"], required=["rps"]),
    "shunt-to-shunt": dict(
        title="shunt to shunt (two shuntd over net_memif) against kernel loopback", op="op",
        metrics=["p50_us", "p99_us", "p999_us", "rps", "lat_p50_us", "srv_cpu_us", "machine_busy_us"], cpu=True,
        required_by_case={"sockperf-pp-tcp": ["p50_us", "p99_us", "p999_us"], "wrk c=32": ["rps"]}),
    "engine": dict(
        title="the engine alone (engine_bench: two engines over an in-memory wire) against kernel loopback TCP",
        op="txn", metrics=["txn_per_s", "cycles_per_txn", "gbps"],
        required_by_case={"rr64": ["txn_per_s", "cycles_per_txn"], "bulk": ["gbps"]}),
    "passthrough": dict(
        title="calls libshunt.so passes to libc (ns per call; shunt = preloaded and attached)", op="call",
        metrics=None, required_prefix="extra_ns_"),
}

TARGETS = [
    # label, workload, case, metric, comparison, threshold
    ("{loss_mb} MiB under 5 % loss, download (time)", "loss", "loss=5% download", "seconds", "<=", 1.5),
    ("{loss_mb} MiB under 5 % loss, upload (time)", "loss", "loss=5% upload", "seconds", "<=", 1.5),
    ("bulk without loss, iperf3 download, 1 connection", "bulk-iperf3", "download-1", "gbps", ">=", 0.8),
    ("bulk without loss, iperf3 upload, 1 connection", "bulk-iperf3", "upload-1", "gbps", ">=", 0.8),
    ("bulk without loss, iperf3 download, 4 connections", "bulk-iperf3", "download-4", "gbps", ">=", 0.8),
    ("bulk without loss, iperf3 upload, 4 connections", "bulk-iperf3", "upload-4", "gbps", ">=", 0.8),
    ("bulk without loss, curl download, 1 connection", "bulk-curl", "download-1", "mbps", ">=", 0.8),
    ("bulk without loss, curl upload, 1 connection", "bulk-curl", "upload-1", "mbps", ">=", 0.8),
    ("bulk without loss, curl download, 4 connections", "bulk-curl", "download-4", "mbps", ">=", 0.8),
    ("bulk without loss, curl upload, 4 connections", "bulk-curl", "upload-4", "mbps", ">=", 0.8),
    ("nginx keep-alive, 32 connections: requests/s", "nginx-keepalive", "c=32", "rps", ">=", 1.3),
    ("nginx keep-alive, 32 connections: server CPU per request, same offered load",
     "nginx-keepalive", "cpu@c=32", "srv_cpu_us", "<=", 0.7),
    ("nginx short connections: connections/s", "nginx-close", "c=32", "rps", ">=", 1.0),
    ("memcached, 64 B values: operations/s", "memcached", "value=64B", "ops", ">=", 1.3),
    ("memcached, 1 KiB values: operations/s", "memcached", "value=1KiB", "ops", ">=", 1.3),
    ("redis SET -P1: operations/s", "redis", "SET -P1", "ops", ">=", 1.3),
    ("redis GET -P1: operations/s", "redis", "GET -P1", "ops", ">=", 1.3),
    ("redis SET -P16: operations/s", "redis", "SET -P16", "ops", ">=", 1.3),
    ("redis GET -P16: operations/s", "redis", "GET -P16", "ops", ">=", 1.3),
    ("sockperf ping-pong TCP p50 over the veth", "sockperf", "pp-tcp", "p50_us", "<=", 0.5),
    ("sockperf ping-pong UDP p50 over the veth", "sockperf", "pp-udp", "p50_us", "<=", 0.5),
    ("sockperf under-load TCP p50 over the veth", "sockperf", "ul-tcp", "p50_us", "<=", 0.5),
    ("sockperf under-load UDP p50 over the veth", "sockperf", "ul-udp", "p50_us", "<=", 0.5),
    ("shunt to shunt sockperf p50 against kernel loopback", "shunt-to-shunt", "sockperf-pp-tcp", "p50_us", "<=", 0.25),
]


# ---------------------------------------------------------------- parsers

def cmd_cdf(log, out):
    lat = []
    with open(log, errors="replace") as f:
        for line in f:
            parts = line.split(",")
            if len(parts) == 4 and parts[0].strip().isdigit():
                try:
                    lat.append(float(parts[3]))
                except ValueError:
                    pass
    if not lat:
        print("cdf: no sample in %s" % log, file=sys.stderr)
        return 1
    lat.sort()
    probs = [i / 200 for i in range(1, 200)] + [0.995, 0.999, 0.9995, 0.9999]
    qs = [lat[min(len(lat) - 1, int(p * len(lat)))] for p in probs]
    with open(out, "w") as f:
        json.dump({"n": len(lat), "p": probs, "us": qs, "min": lat[0], "max": lat[-1]}, f)
    return 0


def cmd_iperf3():
    text = sys.stdin.read()
    try:
        d = json.loads(text[text.index("{"):])
    except (ValueError, json.JSONDecodeError):
        print("not iperf3 JSON: " + " ".join(text.split()[-12:]))
        return 0
    if d.get("error"):
        print("iperf3 error: " + d["error"])
        return 0
    s = d.get("end", {}).get("sum_received")
    if not s:
        print("no sum_received")
        return 0
    print("%.4f %d" % (s["bits_per_second"] / 1e9, s["bytes"]))
    return 0


def _gbench(text):
    d = json.loads(text[text.index("{"):])
    return d.get("context", {}), d.get("benchmarks", [])


UNIT_NS = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}


def cmd_gbench(kind):
    text = sys.stdin.read()
    try:
        _, benches = _gbench(text)
    except (ValueError, json.JSONDecodeError) as e:
        print("error: not Google Benchmark JSON (%s): %s" % (e, " ".join(text.split()[-12:])))
        return 0
    # With repetitions, the median aggregate of each benchmark; else its one run.
    if any(b.get("aggregate_name") == "median" for b in benches):
        benches = [b for b in benches if b.get("aggregate_name") == "median"]
    else:
        benches = [b for b in benches if b.get("run_type", "iteration") == "iteration"]
    found = {}
    for b in benches:
        if b.get("error_occurred"):
            print("error: %s: %s" % (b["name"], b.get("error_message")))
            continue
        name = b.get("run_name", b["name"])
        base = name.split("/")[0]
        if kind == "engine":
            if "RequestResponse64" in base:
                print("txn_per_s %.1f" % b["txn/s"])
                print("cycles_per_txn %.1f" % b["cycles/txn"])
            elif "Bulk" in base:
                print("gbps %.4f" % (b["bytes_per_second"] * 8 / 1e9))
        else:
            call = base[3:] if base.startswith("BM_") else base
            calls = 2 if call in ("send_recv_unix", "dup_close") else 1
            ns = b["real_time"] * UNIT_NS.get(b.get("time_unit", "ns"), 1) / calls
            how = name.split("/")[1] if "/" in name else "interposed"
            found.setdefault(call, {})[how] = ns
    for call, d in sorted(found.items()):
        if "interposed" in d:
            print("ns_%s %.3f" % (call, d["interposed"]))
        if "libc" in d:
            print("libc_ns_%s %.3f" % (call, d["libc"]))
        if "interposed" in d and "libc" in d:
            print("extra_ns_%s %.3f" % (call, d["interposed"] - d["libc"]))
    return 0


# ---------------------------------------------------------------- the report

def load(out):
    meta, results, not_run = {}, [], {}
    path = os.path.join(out, "raw", "results.jsonl")
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                print("report: %s:%d: bad line (%s)" % (path, n, e), file=sys.stderr)
                continue
            t = r.get("type")
            if t == "meta":
                meta[r["key"]] = r["value"]
            elif t == "not_run":
                not_run[r["workload"]] = r["reason"]
            elif t == "result":
                results.append(r)
    return meta, results, not_run


def summarize(results):
    """(workload, case, metric, stack) -> list of values of ok trials."""
    vals = {}
    for r in results:
        if not r["ok"]:
            continue
        for k, v in r["metrics"].items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                vals.setdefault((r["workload"], r["case"], k, r["stack"]), []).append(v)
    return vals


def stat(v):
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v), "values": v}


def fmt(x):
    if x is None:
        return "–"
    a = abs(x)
    if a >= 1000:
        return "{:,.0f}".format(x)
    if a >= 100:
        return "%.0f" % x
    if a >= 10:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    if a == 0:
        return "0"
    return "%.3g" % x


def cell(s):
    if not s:
        return "no number"
    if s["n"] == 1:
        return fmt(s["median"])
    return "%s [%s–%s]" % (fmt(s["median"]), fmt(s["min"]), fmt(s["max"]))


def ratio(ss, sk):
    if not ss or not sk or sk["median"] == 0:
        return None
    return ss["median"] / sk["median"]


def case_order(meta, w, results):
    cases = [c for c in meta.get("cases." + w, "").split("|") if c]
    for r in results:
        if r["workload"] == w and r["case"] not in cases:
            cases.append(r["case"])
    return cases


def metric_unit(w, k):
    label, unit, better = METRICS.get(k, (k, "", "none"))
    if unit == "µs/op":
        unit = "µs/" + WORKLOADS.get(w, {}).get("op", "op")
    return label, unit, better


def build(out, check):
    meta, results, not_run = load(out)
    vals = summarize(results)
    selected = [w for w in meta.get("selected", "").split() if w]
    summary = {}
    for (w, c, k, s), v in vals.items():
        summary.setdefault(w, {}).setdefault(c, {}).setdefault(k, {})[s] = stat(v)
    for w in summary:
        for c in summary[w]:
            for k, d in summary[w][c].items():
                d["ratio"] = ratio(d.get("shunt"), d.get("kernel"))

    def get(w, c, k, s):
        return summary.get(w, {}).get(c, {}).get(k, {}).get(s)

    # Targets.
    targets = []
    loss_mb = meta.get("loss_mb", "64")
    for label, w, c, k, op, thr in TARGETS:
        label = label.format(loss_mb=loss_mb)
        r = ratio(get(w, c, k, "shunt"), get(w, c, k, "kernel"))
        why = not_run.get(w) if w in not_run else (None if w in selected else "not selected (--only)")
        targets.append(dict(target=label, workload=w, case=c, metric=k, want="%s %.2fx" % (op, thr),
                            measured=r, met=None if r is None else (r <= thr if op == "<=" else r >= thr),
                            note=why or ("" if r is not None else "no number")))
    # Throughput at the largest connection count against 100 (each stack).
    scale_cases = [c for c in case_order(meta, "conn-scale", results) if c.startswith("c=")]
    if scale_cases:
        lo, hi = "c=100", max(scale_cases, key=lambda c: int(c[2:]))
        for s in STACKS:
            a, b = get("conn-scale", hi, "rps", s), get("conn-scale", lo, "rps", s)
            r = (a["median"] / b["median"]) if a and b and b["median"] else None
            act = get("conn-scale", hi, "active_conns", s)
            # The premise: every connection open; else the figure is for fewer.
            full = bool(act) and act["median"] >= 0.99 * int(hi[2:])
            t = dict(target="throughput at %s connections against 100 (%s, within 10 %%, all connections open)"
                     % (hi[2:], s), workload="conn-scale", case=hi, metric="rps", want=">= 0.90x",
                     measured=r, met=None if r is None else (r >= 0.9 and full),
                     note="" if r is not None else (not_run.get("conn-scale") or "no number"))
            if r is not None and not full:
                t["detail"] = "only %s of %s connections open" % (fmt(act["median"]) if act else "?", hi[2:])
            targets.append(t)
    else:
        targets.append(dict(target="throughput at 10,000 connections against 100", workload="conn-scale",
                            case="c=10000", metric="rps", want=">= 0.90x", measured=None, met=None,
                            note=not_run.get("conn-scale") or "not selected (--only)"))
    # Pass-through: the largest extra ns per call, in process (libshunt.so's wrapper
    # against libc's own function, interleaved), median over the shunt trials.
    pt = summary.get("passthrough", {}).get("calls", {})
    extras = {}
    for k, d in pt.items():
        if k.startswith("extra_ns_") and d.get("shunt"):
            extras[k[len("extra_ns_"):]] = d["shunt"]["median"]
    worst = max(extras.values()) if extras else None
    floor = [abs(d["kernel"]["median"]) for k, d in pt.items() if k.startswith("extra_ns_") and d.get("kernel")]
    targets.append(dict(target="pass-through calls: extra ns per call, wrapper against libc's own function "
                               "(the largest%s)" % (" of %d calls" % len(extras) if extras else ""),
                        workload="passthrough", case="calls", metric="ns", want="< 5 ns",
                        measured=worst, met=None if worst is None else worst < 5, unit="ns",
                        detail=("noise floor: up to %.1f ns between two timings of the same function" % max(floor))
                        if floor else "",
                        note="" if worst is not None else (not_run.get("passthrough") or
                                                           ("no number" if "passthrough" in selected else "not selected (--only)"))))

    # Missing numbers (the smoke check).
    missing = []
    for w in selected:
        if w in not_run:
            continue
        spec = WORKLOADS.get(w, {})
        for c in [c for c in meta.get("cases." + w, "").split("|") if c]:
            for s in STACKS:
                oks = [r for r in results if r["workload"] == w and r["case"] == c and r["stack"] == s and r["ok"]]
                if not oks:
                    errs = [r["error"] for r in results if r["workload"] == w and r["case"] == c and r["stack"] == s]
                    missing.append("%s %s %s: no successful trial%s" % (w, c, s, (" (" + errs[-1] + ")") if errs else ""))
                    continue
                req = list(spec.get("required", []))
                req += spec.get("required_by_case", {}).get(c, [])
                if s == "shunt":
                    req += spec.get("required_shunt", [])
                for r in oks:
                    lacks = [k for k in req if k not in r["metrics"]]
                    if spec.get("required_prefix") and not any(k.startswith(spec["required_prefix"]) for k in r["metrics"]):
                        lacks.append(spec["required_prefix"] + "*")
                    if lacks:
                        missing.append("%s %s %s trial %s: no %s" % (w, c, s, r["trial"], ", ".join(lacks)))
    oversized = meta.get("oversized_frames", "").split()
    if oversized and any(not x.isdigit() or int(x) for x in oversized[1::2]):
        missing.append("frames longer than the MTU received (or not counted): " + " ".join(oversized))

    plots = make_plots(out, meta, results, summary)
    doc = dict(meta=meta, not_run=not_run, targets=targets, summary=summary, results=results,
               missing=missing, plots=plots)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False, default=str)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(meta, results, summary, targets, not_run, missing, plots, selected, extras))
    if missing:
        print("report: missing numbers:", file=sys.stderr)
        for m in missing:
            print("  " + m, file=sys.stderr)
    return 1 if (check and missing) else 0


# ---------------------------------------------------------------- plots

def make_plots(out, meta, results, summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"shunt": "tab:blue", "kernel": "tab:orange"}
    plots = {}

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(out, name + ".png"), dpi=110)
        plt.close(fig)
        plots[name] = name + ".png"

    def placeholder(ax, text):
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])

    # Latency CDF: the median over trials of each quantile.
    panels = [("sockperf", "pp-tcp", "ping-pong TCP, veth"), ("sockperf", "pp-udp", "ping-pong UDP, veth"),
              ("shunt-to-shunt", "sockperf-pp-tcp", "shunt to shunt (memif) / kernel loopback, TCP")]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (w, c, title) in zip(axes, panels):
        drew = False
        for s in STACKS:
            files = []
            for r in results:
                if r["workload"] == w and r["case"] == c and r["stack"] == s and r["ok"]:
                    p = os.path.join(out, r["raw"][:-4] + ".cdf.json") if r["raw"].endswith(".txt") else None
                    if p and os.path.exists(p):
                        files.append(p)
            curves = []
            for p in files:
                with open(p) as f:
                    curves.append(json.load(f))
            if not curves:
                continue
            probs = curves[0]["p"]
            us = [statistics.median(cv["us"][i] for cv in curves) for i in range(len(probs))]
            label = s if w != "shunt-to-shunt" else ("shunt ↔ shunt" if s == "shunt" else "kernel loopback")
            ax.plot(us, probs, color=colors[s], label="%s (%d trials)" % (label, len(curves)))
            drew = True
        ax.set_title(title, fontsize=10)
        if drew:
            ax.set_xscale("log")
            ax.set_xlabel("one-way latency (µs, sockperf: RTT/2)")
            ax.set_ylabel("fraction of messages")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        else:
            placeholder(ax, "no data (not run)")
    save(fig, "latency_cdf")

    # Throughput against connection count.
    fig, ax = plt.subplots(figsize=(8, 5))
    drew = False
    for w, style, what in (("nginx-keepalive", "-o", "wrk total"), ("conn-scale", "--s", "steady state")):
        for s in STACKS:
            xs, ys, lo, hi = [], [], [], []
            for c, d in summary.get(w, {}).items():
                if not c.startswith("c=") or "rps" not in d or not d["rps"].get(s):
                    continue
                st = d["rps"][s]
                xs.append(int(c[2:]))
                ys.append(st["median"])
                lo.append(st["median"] - st["min"])
                hi.append(st["max"] - st["median"])
            if xs:
                order = sorted(range(len(xs)), key=lambda i: xs[i])
                ax.errorbar([xs[i] for i in order], [ys[i] for i in order],
                            yerr=[[lo[i] for i in order], [hi[i] for i in order]], fmt=style,
                            color=colors[s], capsize=3, label="%s, %s (%s)" % (s, w, what))
                drew = True
    if drew:
        ax.set_xscale("log")
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("requests/s (nginx, 1 KiB)")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Throughput against connection count (median, min–max)")
    else:
        placeholder(ax, "no data (nginx-keepalive and conn-scale not run)")
    save(fig, "throughput_vs_connections")

    # Throughput against loss rate.
    fig, ax = plt.subplots(figsize=(8, 5))
    drew = False
    for d_, style in (("download", "-o"), ("upload", "--s")):
        for s in STACKS:
            pts = []
            for c, d in summary.get("loss", {}).items():
                if not c.endswith(d_) or "mbps" not in d or not d["mbps"].get(s):
                    continue
                pct = float(c.split("=")[1].split("%")[0])
                st = d["mbps"][s]
                pts.append((pct, st["median"], st["median"] - st["min"], st["max"] - st["median"]))
            if pts:
                pts.sort()
                ax.errorbar([p_[0] for p_ in pts], [p_[1] for p_ in pts],
                            yerr=[[p_[2] for p_ in pts], [p_[3] for p_ in pts]], fmt=style, color=colors[s],
                            capsize=3, label="%s, %s" % (s, d_))
                drew = True
    if drew:
        ax.set_xlabel("random loss each way (%)")
        ax.set_ylabel("MB/s (%s MiB with curl, nginx)" % meta.get("loss_mb", "?"))
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Throughput against loss rate (median, min–max)")
    else:
        placeholder(ax, "no data (loss not run)")
    save(fig, "throughput_vs_loss")
    return plots


# ---------------------------------------------------------------- markdown

LAYOUT_TEXT = """\
Two network namespaces, *server* and *client*, joined by **two veth pairs**. On the
*shunt pair* the server's end `vA` has no kernel address: shuntd drives it with DPDK's
`net_af_xdp` (198.18.100.1); on the *kernel pair* the server's end `vC` is an ordinary
kernel interface (198.18.101.1). The client ends `vB` and `vD` are kernel interfaces in
the client namespace. Every server workload starts the **same binary with the same
configuration** twice, once under `shunt run` on 198.18.100.1 and once on the kernel on
198.18.101.1; **both are up at once** for the whole workload, and trials alternate
shunt, kernel, shunt, kernel against the same running servers. One shuntd
(`SHUNT_MODE={shunt_mode}`) serves the whole run. Both stacks put MTU-sized (1500 byte)
frames on the wire: TSO, GSO and GRO are off on the kernel pair's ends, and the kernel
host's ends of both pairs compute their own checksums (`tx off`, which the shunt pair
needs: DPDK gets finished checksums). Shunt to shunt runs in a third namespace (two
shuntd joined by `net_memif`, against kernel loopback in that namespace); the restart
layout of `bench/nginx_vs_kernel.sh` runs in a fourth pair of namespaces."""

FAIRNESS_TEXT = """\
- *Same moment, same machine state.* A shunt trial and the kernel trial after it are
  seconds apart, against servers that have been running for the same time; whatever
  else the machine does (it is shared) lands on both alike, and min–max spreads show
  how much it moved.
- *No cold start in one stack only.* The restart layout rebuilds the namespaces and
  restarts nginx (and, for shunt, shuntd: AF_XDP socket and XDP program, DPDK memory,
  a fresh shared-memory region whose ring pages fault in on first use, ARP) for every
  trial, so every shunt trial measures a cold daemon while the kernel's cold part is
  small (a new socket). Both-up measures both stacks warm, which is how they serve.
- *The same frames.* In the restart layout the kernel's nginx runs on `vA` itself,
  which keeps TSO and GSO: the kernel may send 64 KiB segments that the veth hands over
  whole, while shunt sends 1500-byte frames. Here the kernel pair is limited to
  MTU-sized frames like shunt (checked: the count of oversized frames above).
- *The same path otherwise.* Same namespaces, same server binary and configuration,
  same client programs, same pinning; the two pairs are identical veths. The only
  difference is the stack that owns the server's end.
- *What the idle stack costs.* While the kernel is measured, shuntd and the shunt-side
  servers stay up on the same CPU; their CPU time during the other stack's trials is
  measured (`other_stack_cores` in the CPU rows) so any leak across is visible."""

CPU_TEXT = """\
- **Server processes** (`srv_*`): user and system time from `/proc/PID/stat` (utime,
  stime; every thread) of the server's processes, summed: nginx master and workers,
  memcached, redis-server, iperf3, and under shunt also shuntd; before and after each
  trial, divided by the operations of that trial (requests, connections, operations,
  or MiB for bulk). Clock ticks of 1/{clk_tck} s.
- **The kernel's softirq work is not any server process's own time.** On a bare veth,
  a frame is received in the softirq of the CPU that sent it, inside its transmit;
  {steer_text} This kernel has
  `CONFIG_IRQ_TIME_ACCOUNTING` {irq_time_accounting} (tick-based accounting, HZ={hz}):
  a tick that lands in softirq counts in `/proc/stat`'s softirq column and in the system
  time of whichever task it interrupted. So the report also gives, per operation,
  **/proc/stat deltas per CPU** (`cpuS_*`: the server CPU {server_cpu}, `cpuC_*`: the
  client CPU {client_cpu}, busy = user+nice+system+irq+softirq+steal, and softirq alone)
  and the **whole machine's busy time** (`machine_busy_us`), which counts all of it
  wherever it is charged, client included (the client programs are the same for both
  stacks). Those figures include anything else the machine ran meanwhile.
- **Same offered load** (`cpu@c=32`): wrk with 32 connections, each waiting
  {cpu_delay_ms} ms after every answer (a `delay()` script), so both stacks get about
  32 / ({cpu_delay_ms} ms + RTT) requests/s; the CPU per request there is the target's
  figure. The other cases give CPU per request at full load.
- Bulk workloads give CPU per MiB moved."""


def oversized_text(v):
    parts = (v or "").split()
    if not parts:
        return "not measured"
    return ", ".join("%s %s" % (parts[i + 1], parts[i]) for i in range(0, len(parts) - 1, 2))


def steered(meta):
    return str(meta.get("steer", "1")) != "0"

def steering_text(meta):
    if not steered(meta):
        return "on the sender's CPU, inside its transmit (no steering, BENCH_STEER=0)"
    return ("on its own CPU (receive packet steering, BENCH_STEER=1): vB and vD on CPU %s, vC on CPU %s"
            % (meta.get("client_cpu", "?"), meta.get("server_cpu", "?")))

def defaults(meta):
    keys = ("shunt_mode", "clk_tck", "client_cpu", "server_cpu", "irq_time_accounting", "hz", "cpu_delay_ms")
    d = {k: meta.get(k, "?") for k in keys}
    if not steered(meta):
        d["steer_text"] = ("this run left it so: the client's requests are processed (TCP input for the kernel "
                           "server; the XDP redirect into the AF_XDP ring for shunt) on the client's CPU %s, and "
                           "the server's answers are received by the client's kernel (with what TCP input sends "
                           "at once) on the server's CPU %s." % (d["client_cpu"], d["server_cpu"]))
    else:
        d["steer_text"] = ("this run steers each side's receiving to its own CPU, as on two machines: the client's "
                           "kernel receives on CPU %s, the kernel server's on CPU %s. The XDP redirect of frames "
                           "into shunt's AF_XDP ring (a NIC's DMA on real hardware) still runs inside the client's "
                           "transmit, on CPU %s." % (d["client_cpu"], d["server_cpu"], d["client_cpu"]))
    return d

def markdown(meta, results, summary, targets, not_run, missing, plots, selected, extras):
    L = []
    a = L.append
    smoke = meta.get("smoke") == "1"
    a("# shunt against the Linux kernel%s" % (" (smoke run: one short trial, numbers not meaningful)" if smoke else ""))
    a("")
    a("Run %s to %s (UTC), %s s; commit `%s`; `%s`." % (meta.get("start", "?"), meta.get("end", "?"),
                                                   meta.get("duration_s", "?"), meta.get("commit", "?"),
                                                   meta.get("command", "?")))
    a("Machine: %s, %s CPUs, Linux %s; load average at start %s, at end %s. Trials: %s per case and stack, "
      "%s s each (shunt and kernel alternate: shunt, kernel, shunt, kernel, ...)." % (
          meta.get("cpu_model", "?"), meta.get("cpus", "?"), meta.get("kernel", "?"), meta.get("loadavg_start", "?"),
          meta.get("loadavg_end", "?"), meta.get("trials", "?"), meta.get("secs", "?")))
    a("")
    a("Cells: median [min–max] over the trials; ratio = median(shunt) / median(kernel). The *better* column says "
      "which way is better for that row (higher: throughput; lower: latency, time, CPU). The machine may be shared: "
      "compare ratios from one run, not absolute figures across runs.")
    a("")
    a("## Layout and pinning")
    a("")
    a(LAYOUT_TEXT.format(**defaults(meta)))
    a("")
    a("| veth end | namespace | address | offloads |")
    a("|---|---|---|---|")
    for i, ns, addr in (("vA", "server", "none: shuntd's (net_af_xdp, 198.18.100.1; its offload flags are unused)"), ("vB", "client", "198.18.100.2"),
                        ("vC", "server", "198.18.101.1 (kernel)"), ("vD", "client", "198.18.101.2")):
        a("| %s | %s | %s | %s |" % (i, ns, addr, meta.get("offloads." + i, "?")))
    a("")
    a("Pinning: %s. Idle shuntd: %s." % (meta.get("pinning", "?"), meta.get("shuntd_idle", "?")))
    a("")
    a("Where each side's kernel receives: %s." % steering_text(meta))
    a("")
    a("IPv4 packets longer than 1500 bytes as received off the wire (nftables netdev ingress counters on the "
      "client ends vB and vD and on the kernel server's end vC, whole run; must be 0): "
      "**%s**." % oversized_text(meta.get("oversized_frames")))
    a("")
    a("### Why this layout is fair")
    a("")
    a(FAIRNESS_TEXT.format(**defaults(meta)))
    lay = layout_comparison(summary)
    if lay:
        a("")
        a(lay)
    a("")
    a("## Targets")
    a("")
    a("| target | wanted (shunt/kernel) | measured | met |")
    a("|---|---|---|---|")
    for t in targets:
        m = t["measured"]
        ms = "–" if m is None else (("%+.2f ns" % m) if t.get("unit") == "ns" else "%.2fx" % m)
        met = "not run: %s" % t["note"] if t["met"] is None and t["note"] else ("yes" if t["met"] else "**no**")
        if t["met"] is None and not t["note"]:
            met = "no number"
        if t.get("detail"):
            met += " (%s)" % t["detail"]
        a("| %s | %s | %s | %s |" % (t["target"], t["want"], ms, met))
    a("")
    if not_run:
        a("## Not run")
        a("")
        for w, why in not_run.items():
            a("- **%s**: not run: %s" % (w, why))
        a("")
    failed = [r for r in results if not r["ok"]]
    if failed or missing:
        a("## Failures and missing numbers")
        a("")
        for r in failed:
            a("- %s %s %s trial %s: %s (raw: `%s`)" % (r["workload"], r["case"], r["stack"], r["trial"],
                                                     r["error"] or "failed", r["raw"]))
        for m in missing:
            a("- missing: %s" % m)
        a("")
    a("## Results")
    for w in selected:
        spec = WORKLOADS.get(w, {})
        a("")
        a("### %s: %s" % (w, spec.get("title", "")))
        a("")
        if w in not_run:
            a("not run: %s" % not_run[w])
            continue
        if w not in summary:
            a("no number (every trial failed; see Failures)")
            continue
        if w == "passthrough":
            a(passthrough_table(summary[w].get("calls", {}), extras))
            continue
        a(metric_table(meta, w, results, summary[w], spec.get("metrics")))
        notes = sorted({"%s %s: %s" % (r["case"], r["stack"], r["note"]) for r in results
                        if r["workload"] == w and r.get("note")})
        if notes:
            a("")
            a("Notes: " + "; ".join(notes[:12]) + (" …" if len(notes) > 12 else ""))
    a("")
    a("## CPU accounting")
    a("")
    a(CPU_TEXT.format(**defaults(meta)))
    a("")
    a("### CPU detail")
    a("")
    a("Per operation of each workload (µs), median [min–max]; `other_stack_cores`: CPU of the other stack's idle "
      "servers during the trial (cores).")
    for w in selected:
        if WORKLOADS.get(w, {}).get("cpu") and w in summary and w not in not_run:
            a("")
            a("#### %s" % w)
            a("")
            a(metric_table(meta, w, results, summary[w], CPU_METRICS))
    a("")
    a("## Plots")
    a("")
    for k, p in plots.items():
        a("![%s](%s)" % (k, p))
        a("")
    a("Raw tool output per trial: `raw/WORKLOAD/CASE-STACK-TRIAL.txt`; every number: `results.json`.")
    a("")
    return "\n".join(L)


def metric_table(meta, w, results, sw, keys):
    lines = ["| case | metric | better | shunt | kernel | shunt/kernel |", "|---|---|---|---|---|---|"]
    for c in case_order(meta, w, results):
        d = sw.get(c, {})
        for k in (keys or sorted(d)):
            if k not in d:
                continue
            label, unit, better = metric_unit(w, k)
            r = d[k].get("ratio")
            kern = "n/a" if k.startswith("shuntd_") else cell(d[k].get("kernel"))
            lines.append("| %s | %s%s | %s | %s | %s | %s |" % (
                c, label, (" (%s)" % unit) if unit else "", better if better != "none" else "",
                cell(d[k].get("shunt")), kern, "–" if r is None else "%.2fx" % r))
    return "\n".join(lines)


def layout_comparison(summary):
    both = summary.get("nginx-keepalive", {}).get("c=32", {}).get("rps", {})
    rest = summary.get("nginx-restart", {}).get("c=32", {}).get("rps", {})
    if not both and not rest:
        return ""
    lines = ["Both layouts measured in this run, nginx keep-alive, 32 connections (requests/s):", "",
             "| layout | shunt | kernel | shunt/kernel |", "|---|---|---|---|"]
    for name, d in (("two pairs, both servers up, trials alternate (default)", both),
                    ("one pair, stack restarted per trial (bench/nginx_vs_kernel.sh)", rest)):
        r = d.get("ratio") if d else None
        lines.append("| %s | %s | %s | %s |" % (name, cell(d.get("shunt")) if d else "not run",
                                              cell(d.get("kernel")) if d else "not run",
                                              "–" if r is None else "%.2fx" % r))
    return "\n".join(lines)


def passthrough_table(d, extras):
    def med(k, s):
        x = d.get(k, {}).get(s)
        return x["median"] if x else None

    lines = ["ns per call, median [min–max] over the trials. *In process*: the same process times each call "
             "through the linked symbol (libshunt.so's wrapper when preloaded) and through libc's own function "
             "(dlsym), interleaved; the difference is the wrapper's cost (the target). Without libshunt.so the "
             "two are the same function: their difference is the noise floor. *Across processes*: preloaded "
             "run against a run without libshunt.so (noisier: separate processes).", "",
             "| call | preloaded: wrapper | preloaded: libc | **extra, in process** | without: noise floor "
             "| across processes: preloaded − without |", "|---|---|---|---|---|---|"]
    for k in sorted(d):
        if not k.startswith("ns_"):
            continue
        call = k[3:]
        a, b = med(k, "shunt"), med(k, "kernel")
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            call, cell(d[k].get("shunt")), cell(d.get("libc_" + k, {}).get("shunt")),
            cell(d.get("extra_" + k, {}).get("shunt")), cell(d.get("extra_" + k, {}).get("kernel")),
            "–" if a is None or b is None else "%+.2f" % (a - b)))
    return "\n".join(lines)


def main(argv):
    if len(argv) >= 2 and argv[1] == "build":
        return build(argv[2], "--check" in argv[3:])
    if len(argv) == 4 and argv[1] == "cdf":
        return cmd_cdf(argv[2], argv[3])
    if len(argv) == 2 and argv[1] == "iperf3":
        return cmd_iperf3()
    if len(argv) == 3 and argv[1] == "gbench":
        return cmd_gbench(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
