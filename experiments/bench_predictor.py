"""Latency of the Stage I predictor: microseconds per request of ``predict`` and
``predict_remaining`` on batches of 1, 16 and 256 request views, feature building included.

    python experiments/bench_predictor.py                          # the shipped artifact
    python experiments/bench_predictor.py --artifact artifacts/predictor/lgbm --threads 2

Views come from the real datasets when ``--data`` has them, else from synthetic rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictors.artifact import load_predictor  # noqa: E402
from predictors.synthetic import synthetic_rows, view_of  # noqa: E402


def _rows(data: Path, n: int) -> tuple[list, str]:
    from predictors.data import load_source

    rows: list = []
    for name in ("tooltalk", "api_bank", "infercept_mix", "toolbench_cot"):
        try:
            rows += load_source(name, data)[0]
        except (FileNotFoundError, ImportError, ValueError):
            continue
    if len(rows) >= n:
        return rows, "real"
    return synthetic_rows(max(n, 600)), "synthetic"


def bench(fn, views, min_s: float) -> float:
    """Median-free simple timing: repeat until ``min_s`` elapsed; returns us per request."""
    fn(views)  # warm up
    reps, t0 = 0, time.perf_counter()
    while True:
        fn(views)
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / (reps * len(views)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default=str(ROOT / "data/predictors/lgbm"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--threads", type=int, default=1, help="LightGBM prediction threads")
    ap.add_argument("--batches", default="1,16,256")
    ap.add_argument("--min-s", type=float, default=0.5, help="seconds per measurement")
    args = ap.parse_args()
    pred = load_predictor(args.artifact, num_threads=args.threads)
    sizes = [int(b) for b in args.batches.split(",")]
    rows, kind = _rows(Path(args.data), max(sizes))
    print(f"artifact {args.artifact} ({pred.kind}), {kind} views, threads={args.threads}")
    print(f"{'batch':>6} | {'predict us/req':>14} | {'predict_remaining us/req':>24}")
    print(f"{'-' * 6}-|-{'-' * 14}-|-{'-' * 24}")
    for b in sizes:
        arrive = [view_of(r) for r in rows[:b]]
        running = [view_of(r, r.num_calls) for r in rows[:b]]
        a = bench(pred.predict, arrive, args.min_s)
        r = bench(pred.predict_remaining, running, args.min_s)
        print(f"{b:>6} | {a:>14.1f} | {r:>24.1f}")


if __name__ == "__main__":
    main()
