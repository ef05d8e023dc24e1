#!/usr/bin/env python3
"""Plot median per-sample error against NFE from a `fewstep-bench solvers` JSON file.

    .venv/bin/python benchmarks/plot_solvers.py out/bench/solvers.json docs/solvers_error_vs_nfe.png

One line per solver (log-log axes, each NFE labelled); points whose run did not succeed are left out.
`--solvers` keeps a few for a readable plot (the README's: euler,ddim,dpmpp_2m,dpmpp_3m,deis,unipc).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="output of fewstep-bench solvers --json")
    parser.add_argument("png", type=Path, help="where to write the plot")
    parser.add_argument("--metric", default="median", choices=["median", "rmse", "mean", "p90"])
    parser.add_argument("--solvers", default="", help="comma-separated solvers to draw (default: all in the file)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    doc = json.loads(args.json.read_text())
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in doc["results"]:
        if r.get("status") == "ok":
            curves[r["solver"]].append((r["nfe"], r["error"][args.metric]))
    if args.solvers:
        wanted = [s.strip() for s in args.solvers.split(",") if s.strip()]
        missing = [s for s in wanted if s not in curves]
        if missing:
            raise SystemExit(f"--solvers: {', '.join(missing)} not in {args.json} (it has {', '.join(sorted(curves))})")
        curves = {s: curves[s] for s in wanted}
    if not curves:
        raise SystemExit(f"{args.json}: no successful runs to plot")
    orders = {r["solver"]: r.get("order") for r in doc["results"]}

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = "osD^v<>phX*"
    nfes = sorted({p[0] for points in curves.values() for p in points})
    for i, (name, points) in enumerate(curves.items() if args.solvers else sorted(curves.items())):
        points.sort()
        label = f"{name} (order {orders[name]})" if orders.get(name) else name
        ax.loglog([p[0] for p in points], [p[1] for p in points], marker=markers[i % len(markers)],
                  linestyle="-" if i < 10 else "--", label=label)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(nfes, [str(n) for n in nfes])
    cfg = doc["config"]
    ax.set_xlabel("NFE (model evaluations)")
    ax.set_ylabel(f"{args.metric} per-sample error vs reference")
    ax.set_title(f"{cfg['dim']}-D, {cfg['components']}-component mixture, {cfg['schedule'].split('(')[0]}, "
                 f"{cfg['spacing']} grid")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
