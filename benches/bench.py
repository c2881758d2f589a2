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
import time


def measure(cmd, env=None):
    devnull = os.open(os.devnull, os.O_WRONLY)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            os.execvpe(cmd[0], cmd, env or os.environ)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    os.close(devnull)
    code = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss / 1024.0, code  # ru_maxrss is KiB on Linux


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


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    compare(spec["label"], spec["a_name"], spec["a_cmd"], spec["b_name"], spec["b_cmd"], spec.get("rounds", 7))
