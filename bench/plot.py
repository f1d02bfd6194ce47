"""PNG plots of benchmark results: plot.py RESULTS_DIR NAME...

Reads RESULTS_DIR/NAME.json and writes RESULTS_DIR/NAME.png. The kind of plot follows the
name: scheduling-* (one bar panel per metric, one bar per preset), overhead (requests/s and
latency per target), large-prompt and streaming (direct against through the router, per
concurrency).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OURS = "#1f6f8b"
OTHERS = "#9aa5ad"


def bars(ax, labels, values, title, fmt, highlight):
    colors = [OURS if label == highlight else OTHERS for label in labels]
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    for i, v in enumerate(values):
        ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=7)
    ax.margins(y=0.15)


def scheduling(data, out):
    rows = data["rows"]
    presets = [r["preset"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4))
    bars(axes[0], presets, [r["req_per_s"] for r in rows], "throughput (req/s)", "{:.0f}", "sluice-default")
    bars(axes[1], presets, [r["ttft_p90_s"] * 1e3 for r in rows], "TTFT p90 (ms)", "{:.0f}", "sluice-default")
    bars(axes[2], presets, [r["e2e_p50_s"] * 1e3 for r in rows], "end-to-end p50 (ms)", "{:.0f}", "sluice-default")
    bars(axes[3], presets, [r["prefix_hit_rate"] * 100 for r in rows], "prefix-cache hit rate (%)", "{:.0f}", "sluice-default")
    fig.suptitle(f"{data['workload']}: {data['replicas']} simulated engines, time scale {data['time_scale']:g}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def overhead(data, out):
    rows = data["rows"]
    names = [r["target"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    bars(axes[0], names, [r["rps"] for r in rows], "requests/s", "{:.0f}", "sluice")
    bars(axes[1], names, [r["p50_ms"] for r in rows], "p50 latency (ms)", "{:.2f}", "sluice")
    bars(axes[2], names, [r["p99_ms"] for r in rows], "p99 latency (ms)", "{:.2f}", "sluice")
    fig.suptitle(data.get("title", "overhead"), fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def direct_vs_router(data, out):
    """rows: {concurrency, target: direct|sluice, <metric>_p50_ms, <metric>_p99_ms}."""
    metric = data["metric"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for target, color in (("direct", OTHERS), ("sluice", OURS)):
        pts = sorted((r["concurrency"], r) for r in data["rows"] if r["target"] == target)
        xs = [c for c, _ in pts]
        ax.plot(xs, [r[f"{metric}_p50_ms"] for _, r in pts], "o-", color=color, label=f"{target} p50")
        ax.plot(xs, [r[f"{metric}_p99_ms"] for _, r in pts], "s--", color=color, label=f"{target} p99")
    ax.set_xlabel("concurrency")
    ax.set_ylabel(f"{metric.upper()} (ms)")
    ax.set_title(data.get("title", metric), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    results = sys.argv[1]
    for name in sys.argv[2:]:
        path = os.path.join(results, name + ".json")
        if not os.path.exists(path):
            print(f"plot: no {path}", file=sys.stderr)
            continue
        data = json.load(open(path))
        out = os.path.join(results, name + ".png")
        if name.startswith("scheduling-"):
            scheduling(data, out)
        elif name.startswith("overhead"):
            overhead(data, out)
        else:
            direct_vs_router(data, out)
        plt.close("all")
        print(f"plot: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
