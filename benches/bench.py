#!/usr/bin/env python3
"""Side-by-side benchmarks for psk-guard (run by benches/node-check and benches/scan-db).

Runs each command alternately, several rounds, in one process, and reports the median wall time and
the peak RSS of each (from wait4's rusage of that very child), plus the ratio.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def measure(cmd):
    """Wall time and peak RSS of one run. stdout goes to a real file: GNU grep stops at the first
    match when its stdout is /dev/null. RSS comes from /usr/bin/time, not from wait4 after a fork
    of this (larger) Python process."""
    with tempfile.TemporaryDirectory() as d:
        out, rss_file = os.path.join(d, "out"), os.path.join(d, "rss")
        with open(out, "wb") as o:
            t0 = time.perf_counter()
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, stdout=o, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
        with open(rss_file) as f:
            rss_kb = int(f.read().strip().splitlines()[-1])
    return wall, rss_kb / 1024.0, p.returncode


def compare(label, a_name, a_cmd, b_name, b_cmd, rounds=7, ok_codes=(0, 1)):
    res = {a_name: [], b_name: []}
    for _ in range(rounds):
        for name, cmd in ((a_name, a_cmd), (b_name, b_cmd)):
            wall, rss, code = measure(cmd)
            if code not in ok_codes:
                sys.exit(f"{name} exited {code}: {' '.join(cmd)}")
            res[name].append((wall, rss))
    out = {"label": label}
    for name in (a_name, b_name):
        walls = [w for w, _ in res[name]]
        out[name] = {
            "median_wall_s": round(statistics.median(walls), 4),
            "min_wall_s": round(min(walls), 4),
            "peak_rss_mb": round(max(r for _, r in res[name]), 1),
        }
    out["wall_ratio"] = round(out[a_name]["median_wall_s"] / out[b_name]["median_wall_s"], 3)
    print(json.dumps(out))
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def compare_many(label, cmds, baseline, rounds=7, ok_codes=(0, 1)):
    """Runs every command once per round, in turn (paired, interleaved), and reports medians,
    peak RSS, each command's wall ratio to `baseline` and to every other command, and how loaded
    the machine was (1-minute load average before and after, and its median over the rounds)."""
    res = {name: [] for name, _ in cmds}
    loads = [loadavg()]
    for _ in range(rounds):
        for name, cmd in cmds:
            wall, rss, code = measure(cmd)
            if code not in ok_codes:
                sys.exit(f"{name} exited {code}: {' '.join(cmd)}")
            res[name].append((wall, rss))
        loads.append(loadavg())
    out = {"label": label, "rounds": rounds, "cores": os.cpu_count(),
           "load_1min": {"before": loads[0], "median": statistics.median(loads), "max": max(loads)}}
    for name, _ in cmds:
        walls = [w for w, _ in res[name]]
        out[name] = {
            "median_wall_s": round(statistics.median(walls), 4),
            "min_wall_s": round(min(walls), 4),
            "peak_rss_mb": round(max(r for _, r in res[name]), 1),
        }
    base = out[baseline]["median_wall_s"]
    out["wall_ratio_to_" + baseline] = {name: round(out[name]["median_wall_s"] / base, 3) for name, _ in cmds}
    # Per-round ratios of the first command to each other one (paired runs: same moment, same load).
    first = cmds[0][0]
    out["paired_median_ratio_of_" + first] = {
        name: round(statistics.median(a[0] / b[0] for a, b in zip(res[first], res[name])), 3)
        for name, _ in cmds[1:]}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if "cmds" in spec:
        compare_many(spec["label"], [(c["name"], c["cmd"]) for c in spec["cmds"]], spec["baseline"],
                     spec.get("rounds", 7))
    else:
        compare(spec["label"], spec["a_name"], spec["a_cmd"], spec["b_name"], spec["b_cmd"], spec.get("rounds", 7))
