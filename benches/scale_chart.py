#!/usr/bin/env python3
"""Charts of the scaling benchmark.

Usage: scale_chart.py target/bench/scale.json target/bench/scale.png

Reads the JSON that `cargo bench --bench scale` writes and draws three panels over the host
count N (log scale): the median wall time of every (job, tool) with the floor of each job
(workers' sshd CPU / cores during smssh's run) dashed; wall time as a ratio to that floor; and
the master's own CPU per host. A failed run leaves a gap. Run with the bench venv's Python
(.venv-bench, see scripts/bench-deps.sh).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

JOBS = ["exec", "push", "rotate"]
STYLES = {"smssh": "-", "bssh": "--", "pdsh (tuned)": ":"}
MARKERS = {"exec": "o", "push": "s", "rotate": "^"}


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        data = json.load(f)
    rows = [r for r in data["results"] if not r["failed"] and r["median_s"] is not None]
    series = {}
    for r in rows:
        series.setdefault((r["job"], r["tool"]), []).append(r)
    colors = plt.get_cmap("tab10")

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    wall_ax, ratio_ax, cpu_ax = axes
    for (job, tool), points in sorted(series.items()):
        points.sort(key=lambda r: r["n"])
        ns = [r["n"] for r in points]
        color = colors(JOBS.index(job) if job in JOBS else 9)
        style = dict(color=color, linestyle=STYLES.get(tool, "-."), marker=MARKERS.get(job, "x"),
                     label=f"{job}: {tool}")
        wall_ax.plot(ns, [r["median_s"] for r in points], **style)
        ratios = [(r["n"], r["median_s"] / r["floor_s"]) for r in points if r.get("floor_s")]
        if ratios:
            ratio_ax.plot([n for n, _ in ratios], [q for _, q in ratios], **style)
        cpus = [(r["n"], 1000 * r["client_cpu_median_s"] / r["n"]) for r in points
                if r.get("client_cpu_median_s") is not None]
        if cpus:
            cpu_ax.plot([n for n, _ in cpus], [c for _, c in cpus], **style)
        if tool == "smssh":
            floors = [(r["n"], r["floor_s"]) for r in points if r.get("floor_s")]
            if floors:
                wall_ax.plot([n for n, _ in floors], [f for _, f in floors], color=color,
                             linestyle=(0, (1, 3)), linewidth=1, label=f"{job}: floor")

    goals = data.get("goals", {})
    for key, job in (("exec_ratio", "exec"), ("rotate_ratio", "rotate")):
        if key in goals:
            ratio_ax.axhline(goals[key], color=colors(JOBS.index(job)), linewidth=0.8, alpha=0.5)
            ratio_ax.text(min(data["sizes"]), goals[key], f" goal {job} {goals[key]}x", fontsize=7,
                          va="bottom", color=colors(JOBS.index(job)))

    wall_ax.set_title("wall time (median)")
    wall_ax.set_ylabel("seconds")
    wall_ax.set_yscale("log")
    ratio_ax.set_title("wall time / floor (workers' sshd CPU / cores)")
    ratio_ax.set_ylabel("ratio")
    ratio_ax.set_yscale("log")
    cpu_ax.set_title("master CPU per host (tool's process tree)")
    cpu_ax.set_ylabel("milliseconds per host")
    cpu_ax.set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("hosts (N)")
        ax.set_xticks(data["sizes"])
        ax.set_xticklabels([str(n) for n in data["sizes"]])
        ax.grid(which="both", alpha=0.3)
    wall_ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"smssh at scale: real sshd workers on loopback, {data['cores']} cores, "
                 f"median of {data['rounds']} rounds, {data['push_kib']} KiB push")
    fig.tight_layout()
    fig.savefig(argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
