"""Direct against through the router, per concurrency: direct_vs_router.py OUT METRIC TITLE RUN...

Each RUN is CONCURRENCY:TARGET:PATH, PATH a sluice-bench summary (stdout, or --json output).
METRIC is ttft or itl. Prints the table with the added p50/p99, fails on any failed request,
and writes OUT as JSON for bench/plot.py.
"""

import json
import sys
import time


def main():
    out, metric, title = sys.argv[1:4]
    rows = []
    for run in sys.argv[4:]:
        conc, target, path = run.split(":", 2)
        s = json.load(open(path))
        s = s.get("summary", s)
        rows.append({"concurrency": int(conc), "target": target, "requests": s["requests"], "ok": s["ok"],
                     f"{metric}_p50_ms": s[f"{metric}_p50_s"] * 1e3, f"{metric}_p99_ms": s[f"{metric}_p99_s"] * 1e3})
    print(title)
    print(f"{'concurrency':>11} {'direct p50':>11} {'direct p99':>11} {'sluice p50':>11} {'sluice p99':>11} {'added p50':>10} {'added p99':>10}")
    for c in sorted({r["concurrency"] for r in rows}):
        d = next(r for r in rows if r["concurrency"] == c and r["target"] == "direct")
        s = next(r for r in rows if r["concurrency"] == c and r["target"] == "sluice")
        if d["ok"] != d["requests"] or s["ok"] != s["requests"]:
            sys.exit(f"concurrency {c}: failed requests (direct {d['ok']}/{d['requests']}, sluice {s['ok']}/{s['requests']})")
        p50, p99 = f"{metric}_p50_ms", f"{metric}_p99_ms"
        print(f"{c:>11} {d[p50]:>9.2f}ms {d[p99]:>9.2f}ms {s[p50]:>9.2f}ms {s[p99]:>9.2f}ms "
              f"{s[p50] - d[p50]:>8.2f}ms {s[p99] - d[p99]:>8.2f}ms")
    json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metric": metric, "title": title, "rows": rows},
              open(out, "w"), indent=2)


if __name__ == "__main__":
    main()
