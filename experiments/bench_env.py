"""Benchmark: SchedulingEnv steps/s with random actions on one core (not a test).

The default env (SimEngine on llama3_8b_a100, augmix at 14 req/s for 120 s, the shipped LightGBM
predictor, K = 64), random actions from a seeded generator, whole episodes. Target: >= 2,000
steps/s. ``--profile`` prints the cProfile top 15 (by own time) of one episode. ``--save``/
``--check`` write/compare a digest of the episodes (observations, rewards, per-request records):
the same actions must give the same outcome before and after a speed change.

    python experiments/bench_env.py [--episodes 2] [--profile] [--save F | --check F]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_env(k: int):
    """The default env, built from its parts (also works on older trees without
    ``make_default_env``)."""
    from augserve.engine.factory import make_sim_engine
    from augserve.workload import make_augmix
    from predictors.artifact import load_predictor
    from rl.env import SchedulingEnv

    return SchedulingEnv(make_sim_engine(), make_augmix(rate=14.0, duration_s=120),
                         load_predictor(str(ROOT / "data" / "predictors" / "lgbm")), k=k)


def episode(env, seed: int, digest: hashlib._Hash | None = None) -> tuple[int, float, float]:
    """One episode of random actions: (steps, reset seconds, step seconds)."""
    n_bins = env.action_space["budget"].n
    k = env.action_space["scores"].shape[0]
    rng = np.random.default_rng(1000 + seed)
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    t1 = time.perf_counter()
    steps = 0
    while True:
        a = {"scores": rng.uniform(-10, 10, k).astype(np.float32),
             "budget": int(rng.integers(n_bins))}
        obs, r, term, trunc, _ = env.step(a)
        steps += 1
        if digest is not None:
            for key in sorted(obs):
                digest.update(obs[key].tobytes())
            digest.update(np.float64(r).tobytes())
        if term or trunc:
            break
    t2 = time.perf_counter()
    if digest is not None:
        for rec in env.result().records:
            digest.update(f"{rec.rid}|{rec.finished}|{rec.finish_s!r}|{rec.kv_modes}|"
                          f"{rec.preemptions}".encode())
            digest.update(np.asarray(rec.token_s, dtype=np.float64).tobytes())
    return steps, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this core (default: any one)")
    ap.add_argument("--profile", action="store_true", help="cProfile top 15 of one episode")
    ap.add_argument("--save", help="write the episodes' digest to this JSON file")
    ap.add_argument("--check", help="compare the episodes' digest with this JSON file")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[-1]})
    sys.path.insert(0, str(Path.cwd()))  # run from a tree's root to bench that tree
    env = make_env(args.k)
    episode(env, 99)  # warm-up: imports, caches, LightGBM handles
    digests = []
    tot_steps = tot_reset = tot_step = 0.0
    print(f"default env (augmix 14 req/s x 120 s, llama3_8b_a100, lgbm, K={args.k}), 1 core")
    for ep in range(args.episodes):
        h = hashlib.sha256() if (args.save or args.check) else None
        steps, t_reset, t_step = episode(env, ep, h)
        if h is not None:
            digests.append(h.hexdigest())
        tot_steps += steps
        tot_reset += t_reset
        tot_step += t_step
        print(f"  episode {ep}: {steps} steps, reset {t_reset * 1e3:.0f} ms, "
              f"{steps / t_step:,.0f} steps/s")
    print(f"steps/s: {tot_steps / tot_step:,.0f} (with resets: "
          f"{tot_steps / (tot_step + tot_reset):,.0f})")
    if args.save:
        Path(args.save).write_text(json.dumps({"episodes": digests}) + "\n")
        print(f"digest written to {args.save}")
    if args.check:
        want = json.loads(Path(args.check).read_text())["episodes"]
        same = want == digests
        print(f"digest vs {args.check}: {'identical' if same else 'DIFFERENT'}")
        if not same:
            sys.exit(1)
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        episode(env, 0)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
