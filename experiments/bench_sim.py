"""Benchmark: SimEngine speed under every policy of ``conf/policy/`` (not a test).

Two settings: InferCept's densest (infercept_mix at 4 req/s for an 1800 s window, GPT-J-6B/A100)
and ``make run``'s (augmix at 9 req/s for 600 s, Llama-3-8B/A100). Every policy is built from its
Hydra config (``predictor=lgbm``: the shipped artifact; ``rl_ckpt``: the shipped checkpoint) and
runs on the same requests, one after the other in this process (one core). Reported per policy:
wall time of ``engine.run`` (every feature and prediction cost is inside it: predictors are
reset at the start of a run), simulated tokens (prefill + decode tokens the simulated GPU
processed), simulated tokens per wall second, and wall relative to ``vllm``. Targets: every
policy >= 1 M simulated tokens/s; ``augserve`` within 2x of ``vllm`` (the committed
``experiments/results/bench_sim.md`` says which are missed on the machine it was measured
on). Wall times on a shared machine move by 10-30 %: ``--repeat N`` keeps the fastest of N.

    python experiments/bench_sim.py [--data ../shared/data] [--repeat 3] [--out results.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from augserve.engine.factory import make_sim_engine
from augserve.serving import prepare_requests, split_policy_config
from augserve.workload import make_augmix, make_infercept_json

ROOT = Path(__file__).resolve().parents[1]


def all_policies() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml"))


def build_policies(names: list[str], data_dir: str) -> dict:
    """The policies of ``conf/policy/<name>.yaml`` as ``serve.py`` builds them."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", [f"policy=[{','.join(names)}]", "predictor=lgbm",
                                f"data_dir={data_dir}"])
    return {n: instantiate(split_policy_config(cfg.policies[n])[0]) for n in names}


def settings(data_dir: str) -> list[tuple[str, object, object]]:
    mix = Path(data_dir) / "infercept_mix" / "merged_exp_uniform.json"
    return [
        ("infercept_mix 4 req/s, 1800 s, gptj_6b_a100", make_infercept_json(
            mix, rate=4.0, duration_s=1800.0), make_sim_engine(profile="gptj_6b_a100")),
        ("augmix 9 req/s, 600 s, llama3_8b_a100 (make run)", make_augmix(
            rate=9.0, duration_s=600.0), make_sim_engine(profile="llama3_8b_a100")),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--policies", default="all", help="comma-separated conf/policy names")
    ap.add_argument("--repeat", type=int, default=1, help="keep the fastest of N runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args()
    names = all_policies() if args.policies == "all" else args.policies.split(",")
    if "vllm" in names:  # first, so every row can say how it compares
        names = ["vllm", *[n for n in names if n != "vllm"]]
    lines: list[str] = []
    for title, workload, engine in settings(args.data):
        reqs = prepare_requests(workload, engine, args.seed)
        policies = build_policies(names, args.data)
        lines += [f"### {title}: {len(reqs):,} requests", "",
                  "| policy | wall s | sim tokens | steps | M tokens/s | wall / vllm |",
                  "|---|---:|---:|---:|---:|---:|"]
        print("\n".join(lines[-4:]), flush=True)
        base = None
        for name, pol in policies.items():
            best = float("inf")
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                res = engine.run(reqs, pol)
                best = min(best, time.perf_counter() - t0)
            toks = res.stats["prefill_tokens"] + res.stats["decode_tokens"]
            base = best if name == "vllm" else base
            rel = f"{best / base:.2f}x" if base else "-"
            lines.append(f"| {name} | {best:.2f} | {toks:,} | {res.stats['steps']:,} | "
                         f"{toks / best / 1e6:.2f} | {rel} |")
            print(lines[-1], flush=True)
        lines.append("")
        print()
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
