"""Latency of the Stage I predictor: microseconds per request of ``predict`` and
``predict_remaining`` on batches of 1, 16 and 256 request views, feature building included.

``first sight``: the predictor's caches are emptied before every call (prompt hashing and
arrival rows included, what a request costs the first time a server sees it); ``cached``: the
same views again (a re-prediction with unchanged inputs), and ``predict_tool_s`` (the KV
decision at a call) on first sight of the call's runtime state.

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


def bench(fn, views, min_s: float, reset=None) -> float:
    """Repeat until ``min_s`` of timed calls; µs per request (``reset`` runs untimed before
    every call)."""
    fn(views)  # warm up
    reps, spent = 0, 0.0
    while spent < min_s:
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        fn(views)
        spent += time.perf_counter() - t0
        reps += 1
    return spent / (reps * len(views)) * 1e6


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
    print(f"{'batch':>6} | {'predict':>16} | {'predict_remaining':>16} | {'predict_tool_s':>14}")
    print(f"{'':>6} | {'first / cached':>16} | {'first / cached':>16} | {'first':>14}  µs/req")
    for b in sizes:
        arrive = [view_of(r) for r in rows[:b]]
        running = [view_of(r, r.num_calls) for r in rows[:b]]
        a0 = bench(pred.predict, arrive, args.min_s, pred.reset)
        a1 = bench(pred.predict, arrive, args.min_s)
        r0 = bench(pred.predict_remaining, running, args.min_s, pred.reset)
        r1 = bench(pred.predict_remaining, running, args.min_s)

        def fresh_tool_state(vs: list = running) -> None:  # arrival rows cached, the
            pred.reset()                                   # call's state not yet
            pred.predict(vs)

        t0 = bench(pred.predict_tool_s, running, args.min_s, fresh_tool_state)
        print(f"{b:>6} | {a0:>7.1f} / {a1:>6.1f} | {r0:>7.1f} / {r1:>6.1f} | {t0:>14.1f}")


if __name__ == "__main__":
    main()
