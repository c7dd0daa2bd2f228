"""Foundation check: vllm vs infercept vs oracle on infercept_mix over request rate.

InferCept's setting: GPT-J-6B on A100 (profile gptj_6b_a100), requests drawn with replacement
from merged_exp_uniform.json, Poisson arrivals over an 1800 s window, rates 1.0-4.0 req/s; the
same seed (hence arrivals) for every policy. Run with and without prefix caching (InferCept
measured a vLLM without it). Writes experiments/results/foundation_sweep.{csv,md,png}.

    python experiments/sweep_foundation.py [--data ../shared/data] [--window 1800] [--seeds 0]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from augserve.engine.factory import make_sim_engine
from augserve.metrics import summarize
from augserve.report import plot_goodput_vs_rate
from augserve.sched import InferCeptPolicy, OraclePolicy, VLLMPolicy
from augserve.serving import prepare_requests
from augserve.slo import parse_slo
from augserve.workload import make_infercept_json

ROOT = Path(__file__).resolve().parents[1]
COLS = ("prefix_caching", "policy", "rate", "seed", "goodput", "slo_attainment",
        "median_ttft_ms", "p99_ttft_ms", "median_norm_latency_ms", "mean_norm_latency_ms",
        "recompute_frac", "preemptions", "completed", "num_requests")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--window", type=float, default=1800.0)
    ap.add_argument("--rates", default="1.0,1.5,2.0,2.5,3.0,3.5,4.0")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--profile", default="gptj_6b_a100")
    ap.add_argument("--slo", default="ttft:1000")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = ap.parse_args()
    path = Path(args.data) / "infercept_mix" / "merged_exp_uniform.json"
    rates = [float(x) for x in args.rates.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    slo = parse_slo(args.slo)
    rows = []
    jobs = [(pc, r, s) for pc in (False, True) for r in rates for s in seeds]
    for pc, rate, seed in tqdm(jobs, desc="sweep"):
        wl = make_infercept_json(path, rate=rate, duration_s=args.window)
        eng = make_sim_engine(profile=args.profile, prefix_caching=pc)
        reqs = prepare_requests(wl, eng, seed)
        for pol in (VLLMPolicy(), InferCeptPolicy(), OraclePolicy()):
            res = eng.run(reqs, pol)
            s = summarize(res, slo, duration_s=args.window)
            fwd = res.stats["forward_s"]
            rows.append({
                # a cache-off row is its own row, named as serve.py names vLLM's (vllm_nocache)
                "prefix_caching": pc, "policy": pol.name if pc else f"{pol.name}_nocache",
                "rate": rate, "seed": seed,
                "goodput": s["goodput"], "slo_attainment": s["slo_attainment"],
                "median_ttft_ms": s["median_ttft_ms"], "p99_ttft_ms": s["p99_ttft_ms"],
                "median_norm_latency_ms": s["median_norm_latency_ms"],
                "mean_norm_latency_ms": s["mean_norm_latency_ms"],
                "recompute_frac": res.stats["recompute_s"] / fwd if fwd else np.nan,
                "preemptions": s["preemptions"], "completed": s["completed"],
                "num_requests": s["num_requests"],
            })
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "foundation_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        w.writerows(rows)
    lines = [f"infercept_mix, {args.profile}, {args.window:.0f} s window, SLO {args.slo}, "
             f"seeds {args.seeds}", "",
             "| prefix cache | policy | rate | goodput | SLO att. | TTFT p50 ms | TTFT p99 ms "
             "| norm lat p50 ms/tok | norm lat mean | recompute % fwd | preempt |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {'on' if r['prefix_caching'] else 'off'} | {r['policy']} | {r['rate']:.1f} | "
            f"{r['goodput']:.2f} | {100 * r['slo_attainment']:.1f}% | {r['median_ttft_ms']:.0f} | "
            f"{r['p99_ttft_ms']:.0f} | {r['median_norm_latency_ms']:.1f} | "
            f"{r['mean_norm_latency_ms']:.1f} | {100 * r['recompute_frac']:.1f} | "
            f"{r['preemptions']} |")
    (out / "foundation_sweep.md").write_text("\n".join(lines) + "\n")
    for pc in (False, True):
        sub = [r for r in rows if r["prefix_caching"] == pc]
        tag = "cache" if pc else "nocache"
        plot_goodput_vs_rate(sub, out / f"foundation_goodput_{tag}.png")
        plot_goodput_vs_rate(sub, out / f"foundation_normlat_{tag}.png",
                             metric="median_norm_latency_ms")
    print("\n".join(lines))
    print(f"\nwritten: {out}/foundation_sweep.csv, .md, foundation_*.png")


if __name__ == "__main__":
    main()
