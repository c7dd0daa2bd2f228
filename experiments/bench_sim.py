"""Benchmark: SimEngine speed on InferCept's densest setting (not a test).

infercept_mix at 4 req/s for an 1800 s window (requests drawn with replacement, Poisson), each
policy on one core. Reports wall time and simulated tokens/s (prefill + decode tokens processed
by the simulated GPU per wall-clock second). Target: < 10 s wall, >= 1M simulated tokens/s.

    python experiments/bench_sim.py [--data ../shared/data] [--rate 4] [--window 1800]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from augserve.engine.factory import make_sim_engine
from augserve.sched import InferCeptPolicy, OraclePolicy, VLLMPolicy
from augserve.serving import prepare_requests
from augserve.workload import make_infercept_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--window", type=float, default=1800.0)
    ap.add_argument("--profile", default="gptj_6b_a100")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    wl = make_infercept_json(Path(args.data) / "infercept_mix" / "merged_exp_uniform.json",
                             rate=args.rate, duration_s=args.window)
    print(f"infercept_mix, {args.rate} req/s, {args.window:.0f} s window, {args.profile}")
    print(f"{'policy':<10} {'stretch':>7} {'requests':>8} {'sim tokens':>11} {'steps':>8} "
          f"{'wall s':>7} {'tokens/s':>10}")
    for skip in (True, False):
        for pol in (VLLMPolicy(), InferCeptPolicy(), OraclePolicy()):
            eng = make_sim_engine(profile=args.profile, skip_stretches=skip)
            reqs = prepare_requests(wl, eng, args.seed)
            t0 = time.perf_counter()
            res = eng.run(reqs, pol)
            wall = time.perf_counter() - t0
            toks = res.stats["prefill_tokens"] + res.stats["decode_tokens"]
            print(f"{pol.name:<10} {str(skip):>7} {len(reqs):>8} {toks:>11,} "
                  f"{res.stats['steps']:>8,} {wall:>7.2f} {toks / wall:>10,.0f}")


if __name__ == "__main__":
    main()
