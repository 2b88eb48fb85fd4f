#!/usr/bin/env python3
"""Helpers for bench/run.sh (python3 stdlib only).

  report.py snap PID              print "cpu_seconds rss_kib nprocs nthreads pids user_s sys_s" for the
                                  process tree rooted at PID (the proxy master and all its descendants)
  report.py machine               print the machine's busy CPU seconds so far (user+nice+system, all
                                  CPUs, from /proc/stat; irq/softirq/idle/iowait left out) and its
                                  steal seconds (vCPU time the hypervisor gave to someone else)
  report.py window PROXYPID ORIGINPID before|after
                                  print "proxy_cpu_s proxy_rss_kib nprocs nthreads origin_cpu_s
                                  machine_busy_s steal_s wall_s proxy_user_s proxy_sys_s", the
                                  machine's numbers read last (before) or first (after)
  report.py wrk FILE              print the parsed numbers of one wrk --latency output (debugging)
  report.py table RUNS.tsv OUT.md [key=value ...]
                                  medians over rounds -> markdown table on stdout and in OUT.md
  report.py memory MEMORY.tsv OUT.md [key=value ...]
                                  the memory cases (run.sh --memory) -> markdown on stdout and in OUT.md

  report.py callgrind N BASE.out MEASURED.out [TOP]
                                  instructions per request from two callgrind files of the worker
                                  (bench/callgrind.sh): the first line is (Ir(MEASURED) - Ir(BASE)) / N,
                                  then the TOP functions by their own (exclusive) Ir per request

MEMORY.tsv lines (no header, KiB): "idle proxy n rss workers_rss" (n = 0 first: before any connection)
    and "spike proxy n workers_start workers_peak workers_after wait_s"

RUNS.tsv columns (no header): round proxy path conns wrk_output (relative to RUNS.tsv's directory) cpu_before_s cpu_after_s rss_kib nprocs
    nthreads origin_cpu_s wrk_cpu_s machine_busy_s wall_s steal_s   (these five are deltas over the run)
    user_s sys_s   (the proxy's user and kernel CPU seconds over the run, utime and stime; absent in
                    files written before they were added: those tables show "-" for them)
"""
import os
import re
import statistics
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


# ---------------------------------------------------------------- /proc snapshots

def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, so index 0 is field 3 (state)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("ascii", "replace")
    return data[data.rindex(")") + 2:].split()


def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(name)[1])  # field 4
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(root):
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def snap(root):
    """CPU seconds (utime+stime, all threads) and VmRSS KiB summed over the tree, then user and
    kernel (system) seconds separately."""
    utime, stime, rss, threads, pids = 0, 0, 0, 0, []
    for pid in process_tree(root):
        try:
            f = _stat_fields(pid)
            if f[0] == "Z":
                continue
            ut, kt = int(f[11]), int(f[12])  # fields 14 utime, 15 stime
            with open(f"/proc/{pid}/status") as st:
                kib = nthr = 0
                for line in st:
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        nthr = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        utime += ut
        stime += kt
        rss += kib
        threads += nthr
        pids.append(pid)
    return (utime + stime) / CLK_TCK, rss, threads, pids, utime / CLK_TCK, stime / CLK_TCK


def machine_busy():
    """(user+nice+system, steal) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        v = f.readline().split()
    assert v[0] == "cpu"
    user, nice, system = (int(x) for x in v[1:4])
    steal = int(v[8]) if len(v) > 8 else 0
    return (user + nice + system) / CLK_TCK, steal / CLK_TCK


# ---------------------------------------------------------------- wrk output

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(path):
    with open(path, errors="replace") as f:
        text = f.read()
    r = {}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not m:
        raise ValueError(f"{path}: no 'Requests/sec' line (wrk failed?)\n{text[-2000:]}")
    r["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", text, re.M)
    if not m:
        raise ValueError(f"{path}: no 'N requests in' line")
    r["requests"] = int(m.group(1))
    r["elapsed_s"] = to_us(m.group(2)) / 1e6
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([0-9.]+\w+)", text, re.M)
        if not m:
            raise ValueError(f"{path}: no {pct}% latency line (wrk run without --latency?)")
        r[f"p{pct}_us"] = to_us(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sock_err"] = sum(int(x) for x in m.groups()) if m else 0
    return r


# ---------------------------------------------------------------- report

def load_runs(tsv):
    runs = []
    with open(tsv) as f:
        for line in f:
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            (rnd, proxy, path, conns, out, c0, c1, rss, nprocs, nthreads,
             origin_cpu, wrk_cpu, busy, wall, steal) = cols[:15]
            usr_s, sys_s = (float(cols[15]), float(cols[16])) if len(cols) >= 17 else (None, None)
            r = parse_wrk(os.path.join(os.path.dirname(os.path.abspath(tsv)), out))
            r.update(round=int(rnd), proxy=proxy, path=path, conns=int(conns),
                     cpu_s=float(c1) - float(c0), rss_kib=int(rss), nprocs=int(nprocs), nthreads=int(nthreads),
                     origin_cpu_s=float(origin_cpu), wrk_cpu_s=float(wrk_cpu))
            # CPU used on the machine during the run by anything but proxy, origin and wrk, as a
            # share of the machine's capacity: high values mean the run was disturbed
            other = float(busy) - r["cpu_s"] - r["origin_cpu_s"] - r["wrk_cpu_s"]
            r["other_pct"] = max(0.0, other) * 100.0 / (float(wall) * NCPU)
            r["steal_pct"] = max(0.0, float(steal)) * 100.0 / (float(wall) * NCPU)
            r["cpu_us_req"] = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else float("nan")
            for key, v in (("user_us_req", usr_s), ("sys_us_req", sys_s)):
                r[key] = v * 1e6 / r["requests"] if (v is not None and r["requests"]) else None
            r["rss_mib"] = r["rss_kib"] / 1024.0
            runs.append(r)
    return runs


def fmt(v, kind):
    if v is None:
        return "-"
    if kind == "rps":
        return f"{v:,.0f}"
    if kind == "us":
        return f"{v:,.0f}"
    if kind == "cpu":
        return f"{v:.1f}"
    if kind == "mib":
        return f"{v:.1f}"
    if kind == "ratio":
        return f"{v:.2f}"
    if kind == "int":
        return f"{v:d}"
    return str(v)


NOISY_PCT = 5

METRICS = [  # key, column title, format, which way is better
    ("rps", "req/s", "rps", "higher"),
    ("p50_us", "p50 µs", "us", "lower"),
    ("p99_us", "p99 µs", "us", "lower"),
    ("cpu_us_req", "CPU µs/req", "cpu", "lower"),
    ("user_us_req", "user µs/req", "cpu", "lower"),
    ("sys_us_req", "kernel µs/req", "cpu", "lower"),
    ("rss_mib", "RSS MiB", "mib", "lower"),
]


def median_or_none(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def disturbed(r):
    return r["other_pct"] + r["steal_pct"] > NOISY_PCT


def summary_table(runs, scen, proxies, count_label="runs"):
    head = ["path", "conns"]
    for _, title, _, _ in METRICS:
        head += [f"{title} nginx", f"{title} rproxy", f"{title} ratio"]
    head += ["errors nginx", "errors rproxy", f"{count_label} nginx/rproxy"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---:"] + ["---:"] * (len(head) - 2)) + "|"]
    for path, conns in scen:
        row = [path, str(conns)]
        sel = {p: [r for r in runs if r["proxy"] == p and r["path"] == path and r["conns"] == conns]
               for p in proxies}
        for key, _, kind, _ in METRICS:
            med = {p: median_or_none(r[key] for r in sel[p]) for p in proxies}
            ratio = (med["rproxy"] / med["nginx"]) if (med["nginx"] and med["rproxy"] is not None) else None
            row += [fmt(med["nginx"], kind), fmt(med["rproxy"], kind), fmt(ratio, "ratio")]
        for p in proxies:
            row.append(fmt(sum(r["non2xx"] + r["sock_err"] for r in sel[p]), "int") if sel[p] else "-")
        row.append("%d/%d" % (len(sel["nginx"]), len(sel["rproxy"])))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def routed_table(runs, scen):
    """The routed form (50 vhosts x 20 rules, last rule of last vhost) against the flat form."""
    lines = ["### Routed form vs flat form (rproxy-routed / rproxy; target: CPU µs/req ratio <= 1.05)", "",
             "| path | conns | req/s flat | req/s routed | req/s ratio | CPU µs/req flat | "
             "CPU µs/req routed | CPU µs/req ratio | errors routed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path, conns in scen:
        sel = {p: [r for r in runs if r["proxy"] == p and r["path"] == path and r["conns"] == conns]
               for p in ("rproxy", "rproxy-routed")}
        row = [path, str(conns)]
        for key, kind in (("rps", "rps"), ("cpu_us_req", "cpu")):
            med = {p: (statistics.median(r[key] for r in sel[p]) if sel[p] else None) for p in sel}
            ratio = (med["rproxy-routed"] / med["rproxy"]) if (med["rproxy"] and med["rproxy-routed"] is not None) else None
            row += [fmt(med["rproxy"], kind), fmt(med["rproxy-routed"], kind), fmt(ratio, "ratio")]
        row.append(fmt(sum(r["non2xx"] + r["sock_err"] for r in sel["rproxy-routed"]), "int")
                   if sel["rproxy-routed"] else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def acceptance_lines(runs, scen):
    """The ratios issue 13's acceptance names, one line per scenario: CPU, user-space CPU and RSS
    per request against nginx's (medians over the rounds)."""
    def med(proxy, path, conns, key):
        return median_or_none(r[key] for r in runs
                              if r["proxy"] == proxy and r["path"] == path and r["conns"] == conns)
    out = ["Against nginx (rproxy / nginx, medians; targets of issue 13: CPU <= 0.90, user CPU <= 0.50, "
           "p99 <= 1.00, RSS under /big x 256 <= 1.50):", ""]
    any_line = False
    for path, conns in scen:
        parts = []
        for key, label in (("cpu_us_req", "CPU"), ("user_us_req", "user CPU"), ("sys_us_req", "kernel CPU"),
                           ("p99_us", "p99"), ("rss_mib", "RSS")):
            n, r = med("nginx", path, conns, key), med("rproxy", path, conns, key)
            if n and r is not None:
                parts.append(f"{label} {r / n:.2f}")
        u, c = med("rproxy", path, conns, "user_us_req"), med("rproxy", path, conns, "cpu_us_req")
        nu, nc = med("nginx", path, conns, "user_us_req"), med("nginx", path, conns, "cpu_us_req")
        if u is not None and c and nu is not None and nc:
            parts.append(f"user share of CPU: rproxy {100 * u / c:.0f} %, nginx {100 * nu / nc:.0f} %")
        if parts:
            any_line = True
            out.append(f"- {path} x {conns}: " + ", ".join(parts))
    out.append("")
    return out if any_line else []


def build_table(runs, meta):
    proxies = ("nginx", "rproxy")
    scen = sorted({(r["path"], r["conns"]) for r in runs},
                  key=lambda s: (["/small", "/big"].index(s[0]) if s[0] in ("/small", "/big") else 9, s[1]))
    rounds = sorted({r["round"] for r in runs})
    lines = []
    lines.append("## rproxy vs nginx (medians over %d round%s)" % (len(rounds), "" if len(rounds) == 1 else "s"))
    lines.append("")
    for k, v in meta:
        lines.append(f"- {k}: {v}")
    for p in proxies + ("rproxy-routed",):
        sel = [r for r in runs if r["proxy"] == p]
        if sel:
            lines.append("- %s processes/threads (master + workers, at the end of a run): %s" % (
                p, ", ".join(sorted({f"{r['nprocs']}/{r['nthreads']}" for r in sel}))))
    lines.append("")
    lines.append("Ratio = rproxy / nginx. req/s: above 1 is better for rproxy; "
                 "p50, p99, CPU µs/req, RSS: below 1 is better for rproxy.")
    lines.append("")
    lines += summary_table(runs, scen, proxies)
    lines.append("")
    lines.append("errors = wrk's non-2xx/3xx responses + socket errors (connect, read, write, timeout), "
                 "summed over all rounds.")
    lines.append("")
    lines += acceptance_lines(runs, scen)
    if any(r["proxy"] == "rproxy-routed" for r in runs):
        lines += routed_table(runs, scen)
    worst = max(runs, key=lambda r: r["other_pct"])
    worst_steal = max(runs, key=lambda r: r["steal_pct"])
    noisy = [r for r in runs if disturbed(r)]
    lines.append("Background load (CPU used by anything but proxy, origin and wrk, share of all %d CPUs): "
                 "max %.1f%% (round %d, %s %s c=%d); hypervisor steal: max %.1f%%. %s" % (
                     NCPU, worst["other_pct"], worst["round"], worst["proxy"], worst["path"], worst["conns"],
                     worst_steal["steal_pct"],
                     ("%d of %d runs above %d%% (other + steal): treat these numbers as disturbed and run "
                      "again on a quiet machine." % (len(noisy), len(runs), NOISY_PCT)) if noisy
                     else "Quiet enough."))
    lines.append("")
    quiet = [r for r in runs if not disturbed(r)]
    if noisy and quiet:
        lines.append("### Medians over the quiet runs only (other CPU + steal <= %d%%)" % NOISY_PCT)
        lines.append("")
        lines.append("Fewer runs, and no longer paired by round: a hint, not a replacement for a quiet re-run.")
        lines.append("")
        lines += summary_table(quiet, scen, proxies, "quiet runs")
        lines.append("")
    lines.append("### Every run")
    lines.append("")
    lines.append("| round | proxy | path | conns | req/s | p50 µs | p75 µs | p90 µs | p99 µs | CPU µs/req | "
                 "user µs/req | kernel µs/req | CPU s | RSS MiB | procs/threads | non-2xx | sock err | origin CPU s | "
                 "wrk CPU s | other CPU % | steal % |")
    lines.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (r["round"], r["path"] != "/small", r["conns"], r["proxy"])):
        lines.append("| %d | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %s | %d/%d | %d | %d | %.2f | %.2f | %.1f | %.1f |" % (
            r["round"], r["proxy"], r["path"], r["conns"], fmt(r["rps"], "rps"), fmt(r["p50_us"], "us"),
            fmt(r["p75_us"], "us"), fmt(r["p90_us"], "us"), fmt(r["p99_us"], "us"),
            fmt(r["cpu_us_req"], "cpu"), fmt(r["user_us_req"], "cpu"), fmt(r["sys_us_req"], "cpu"),
            r["cpu_s"], fmt(r["rss_mib"], "mib"), r["nprocs"], r["nthreads"],
            r["non2xx"], r["sock_err"], r["origin_cpu_s"], r["wrk_cpu_s"], r["other_pct"], r["steal_pct"]))
    return "\n".join(lines) + "\n"


def memory_report(tsv, meta):
    idle, spike = [], []
    with open(tsv) as f:
        for line in f:
            c = line.split()
            if not c:
                continue
            if c[0] == "idle":
                idle.append((c[1], int(c[2]), int(c[3]), int(c[4])))
            elif c[0] == "spike":
                spike.append((c[1], int(c[2]), int(c[3]), int(c[4]), int(c[5]), float(c[6])))
    L = ["## Memory: rproxy vs nginx", ""]
    L += [f"- {k}: {v}" for k, v in meta]
    L += ["", "### RSS per idle keep-alive client connection", "",
          "Connections opened in steps and kept open (one GET /small on each, then idle); VmRSS of "
          "master + workers, and of the workers alone, before the first connection (0) and 3 s after "
          "each step's last answer. \"KiB/conn\" = growth since 0 / connections; \"step KiB/conn\" = "
          "growth since the previous step / connections added (free memory the allocator held "
          "from earlier load hides in the first, less in the second; rproxy trims its heap when many "
          "connections park, which also returns what the warm-up left, so its first figure can be "
          "negative: read the later steps).", "",
          "| proxy | connections | RSS KiB | KiB/conn | step KiB/conn | workers RSS KiB | workers KiB/conn |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    per, step = {}, {}
    for proxy in dict.fromkeys(p for p, *_ in idle):
        rows = sorted((n, r, w) for p, n, r, w in idle if p == proxy)
        if not rows or rows[0][0] != 0:
            continue
        _, r0, w0 = rows[0]
        L.append(f"| {proxy} | 0 | {r0} | - | - | {w0} | - |")
        prev = rows[0]
        for n, r, w in rows[1:]:
            per[(proxy, n)] = (r - r0) / n
            step[(proxy, n)] = (r - prev[1]) / (n - prev[0])
            L.append(f"| {proxy} | {n} | {r} | {per[(proxy, n)]:.2f} | {step[(proxy, n)]:.2f} | {w} | {(w - w0) / n:.2f} |")
            prev = (n, r, w)
    L.append("")
    for n in sorted({n for _, n, *_ in idle if n}):
        for label, d in (("since 0", per), ("step", step)):
            ng, rp = d.get(("nginx", n)), d.get(("rproxy", n))
            if ng is not None and rp is not None:
                ratio = f"**{rp / ng:.2f}**" if ng > 0 else "- (nginx grew by nothing)"
                L.append(f"- {n} connections, {label}: rproxy {rp:.2f} KiB, nginx {ng:.2f} KiB per idle "
                         f"connection; ratio rproxy/nginx {ratio} (target of issue 13: <= 1.00)")
    L += ["", "### Spike: connections opened with a half-sent request head, then closed", "",
          "Workers' VmRSS before, with all connections open (each after one GET /small, holding the "
          "first 1 KiB of an unfinished second request head), and some seconds after all were closed.", "",
          "| proxy | connections | workers start KiB | peak KiB | after KiB | wait s | after / start |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for proxy, n, st, pk, af, wait in spike:
        L.append(f"| {proxy} | {n} | {st} | {pk} | {af} | {wait:g} | **{af / st:.2f}** |" if st else
                 f"| {proxy} | {n} | {st} | {pk} | {af} | {wait:g} | - |")
    L += ["", "Target of issue 13: rproxy's worker back within 20 % of its start (after / start <= 1.20)."]
    return "\n".join(L) + "\n"


def callgrind_functions(path):
    """{function: exclusive Ir} and the total, from callgrind_annotate (every function listed)."""
    import subprocess
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path],
                          check=True, capture_output=True, text=True).stdout
    total, funcs = None, {}
    for line in text.splitlines():
        m = re.match(r"^\s*([0-9,]+)\s+(?:\(\s*[0-9.]+%\)\s+)?(.*)$", line)
        if not m:
            continue
        ir, what = int(m.group(1).replace(",", "")), m.group(2).strip()
        if what == "PROGRAM TOTALS":
            total = ir
            continue
        what = re.sub(r"\s+\[[^]]*\]$", "", what)   # the object file
        fn = what.split(":", 1)[1] if ":" in what else what   # source file:function
        funcs[fn] = funcs.get(fn, 0) + ir
    if total is None:
        raise ValueError(f"{path}: no PROGRAM TOTALS in callgrind_annotate's output")
    return total, funcs


def callgrind_report(n, base, meas, top):
    tb, fb = callgrind_functions(base)
    tm, fm = callgrind_functions(meas)
    per = (tm - tb) / n
    diff = sorted(((fm.get(k, 0) - fb.get(k, 0)) / n, k) for k in set(fb) | set(fm))
    diff.reverse()
    L = [f"{per:.1f}", "",
         f"Worker instructions (Ir): baseline {tb:,}, measured {tm:,}; per request {per:,.1f}", "",
         f"Top {top} functions by their own instructions per request (measured - baseline) / {n}:", "",
         "| Ir/req | share | function |", "|---:|---:|---|"]
    for ir, fn in diff[:top]:
        L.append(f"| {ir:,.1f} | {100 * ir / per:.1f} % | `{fn}` |" if per else f"| {ir:,.1f} | - | `{fn}` |")
    return "\n".join(L) + "\n"


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "snap" and len(argv) == 3:
        cpu, rss, threads, pids, usr, sys_ = snap(int(argv[2]))
        print(f"{cpu:.2f} {rss} {len(pids)} {threads} {','.join(map(str, pids))} {usr:.2f} {sys_:.2f}")
        return 0
    if cmd == "window" and len(argv) == 5 and argv[4] in ("before", "after"):
        # one call per side of a run, so that the machine-wide numbers and the wall clock cover
        # the run and as little else as possible: read last before it, first after it
        def machine():
            busy, steal = machine_busy()
            return busy, steal, time.time()
        if argv[4] == "after":
            busy, steal, wall = machine()
        cpu, rss, threads, pids, usr, sys_ = snap(int(argv[2]))
        ocpu = snap(int(argv[3]))[0]
        if argv[4] == "before":
            busy, steal, wall = machine()
        print(f"{cpu:.2f} {rss} {len(pids)} {threads} {ocpu:.2f} {busy:.2f} {steal:.2f} {wall:.3f} {usr:.2f} {sys_:.2f}")
        return 0
    if cmd == "machine" and len(argv) == 2:
        busy, steal = machine_busy()
        print(f"{busy:.2f} {steal:.2f}")
        return 0
    if cmd == "wrk" and len(argv) == 3:
        for k, v in parse_wrk(argv[2]).items():
            print(f"{k}\t{v}")
        return 0
    if cmd == "table" and len(argv) >= 4:
        meta = [tuple(a.split("=", 1)) for a in argv[4:]]
        text = build_table(load_runs(argv[2]), meta)
        with open(argv[3], "w") as f:
            f.write(text)
        sys.stdout.write(text)
        return 0
    if cmd == "callgrind" and len(argv) in (5, 6):
        sys.stdout.write(callgrind_report(int(argv[2]), argv[3], argv[4], int(argv[5]) if len(argv) == 6 else 25))
        return 0
    if cmd == "memory" and len(argv) >= 4:
        meta = [tuple(a.split("=", 1)) for a in argv[4:]]
        text = memory_report(argv[2], meta)
        with open(argv[3], "w") as f:
            f.write(text)
        sys.stdout.write(text)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
