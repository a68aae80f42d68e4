#!/usr/bin/env python3
"""Grouped bar chart of the fan-out benchmark.

Usage: fanout_chart.py target/bench/fanout.json target/bench/fanout.png

Reads the JSON that `cargo bench --bench fanout` writes and draws one group of bars per
(job, N): the median wall time of every tool, a failed tool as an empty slot marked
"failed", and the machine's floor (sshd CPU / cores during the smssh run) as a dashed line
over the group. Run with the bench venv's Python (.venv-bench, see scripts/bench-deps.sh).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        data = json.load(f)
    tools = data["tools"]
    results = {(r["job"], r["n"], r["tool"]): r for r in data["results"]}
    groups = sorted({(job, n) for (job, n, _) in results}, key=lambda g: (g[0] != "true", g[1]))

    width = 0.8 / len(tools)
    fig, ax = plt.subplots(figsize=(max(8, 2.6 * len(groups)), 5.5))
    colors = plt.get_cmap("tab10")
    tops = []
    for t, tool in enumerate(tools):
        xs, ys = [], []
        for g, (job, n) in enumerate(groups):
            r = results.get((job, n, tool))
            x = g + (t - (len(tools) - 1) / 2) * width
            if r is None:
                continue
            if r["failed"] or r["median_s"] is None:
                ax.text(x, 0, "failed", rotation=90, ha="center", va="bottom", fontsize=7)
                continue
            xs.append(x)
            ys.append(r["median_s"])
        tops.extend(ys)
        bars = ax.bar(xs, ys, width, label=tool, color=colors(t))
        for bar, y in zip(bars, ys):
            ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y:.2f}", ha="center",
                    va="bottom", fontsize=6, rotation=90)
    for g, (job, n) in enumerate(groups):
        ours = results.get((job, n, "smssh"))
        floor = ours and ours.get("floor_s")
        if floor:
            ax.hlines(floor, g - 0.45, g + 0.45, colors="black", linestyles="dashed",
                      label="floor (sshd CPU / cores)" if g == 0 else None)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{'true' if job == 'true' else str(data['copy_mib']) + ' MiB copy'}\nN = {n}"
                        for job, n in groups])
    ax.set_ylabel("wall time, seconds (median, log scale)")
    ax.set_yscale("log")
    if tops:
        ax.set_ylim(min(tops) / 2, max(tops) * 3)
    ax.set_title(f"smssh fan-out vs peers ({data['cores']} cores, median of {data['rounds']} runs)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
