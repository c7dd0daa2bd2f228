"""Benchmark: AugServe's per-step decision time vs waiting-queue length (not a test).

Each simulated step does what the engine asks of the policy: 2 requests leave the queue
(admitted), 2 new ones enter (valued in one batch), the policy walks candidates until one does
not fit (4 looked at), and picks the token budget. Targets: < 100 µs at 1k waiting, < 1 ms at 10k
(vLLM's own schedule() costs 0.1-0.5 ms). Prediction cost is reported separately (per request,
batched), with the shipped LightGBM artifact when present, else a constant stub (named so).

    python experiments/bench_decision.py
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from augserve.engine.factory import make_sim_engine
from augserve.predictor import Prediction
from augserve.request import AugRequest, EngineState, RequestView, Segment, State
from augserve.sched.augserve import AugServePolicy

ROOT = Path(__file__).resolve().parents[1]


class ConstantStub:
    """Not a model: constant predictions, to time the policy alone."""

    def predict(self, views):
        return self.predict_remaining(views)

    def predict_remaining(self, views):
        n = len(views)
        return Prediction(np.full(n, 100.0), np.ones(n), np.ones(n), np.full(n, 100.0))


class _Runtime:
    """Stand-in for the engine's request state behind a RequestView."""

    def __init__(self, req: AugRequest) -> None:
        self.req = req
        self.state = State.WAITING
        self.submit_s = self.wait_since_s = req.arrival_s
        self.preempted = False
        self.seg_idx = 0
        self.tool_durations: list[float] = []
        self.return_lengths: list[int] = []
        self.current_tool = None
        self.computed = 0
        self.blocks = 0

    def generated(self) -> int:
        return 0

    def context(self) -> int:
        return self.req.prompt_tokens

    def computed_now(self) -> int:
        return 0


def views(n: int, rng: np.random.Generator, start: int = 0) -> list[RequestView]:
    out = []
    for i in range(start, start + n):
        r = AugRequest(f"r{i}", 0.0, int(rng.integers(16, 2000)), (Segment(10),),
                       aug_type="qa", prompt_text="what is the weather in paris tomorrow",
                       metadata={"source": "infercept_mix"})
        out.append(RequestView(_Runtime(r)))
    return out


def main() -> None:
    eng = make_sim_engine()
    info = eng.info()
    art = ROOT / "data" / "predictors" / "lgbm"
    predictor, pname = ConstantStub(), "constant stub"
    if art.is_dir():
        from predictors.artifact import load_predictor

        predictor, pname = load_predictor(str(art)), "lgbm artifact"
    rng = np.random.default_rng(0)
    print(f"predictor for prediction timing: {pname}")
    print(f"{'waiting':>8} {'decision µs/step':>17} {'prediction µs/request':>22}")
    for n in (100, 1_000, 10_000):
        dec, _ = run(n, ConstantStub(), info, rng)
        _, pred = run(n, predictor, info, rng)
        print(f"{n:>8,} {dec * 1e6:>17.1f} {pred * 1e6:>22.1f}")


def run(n: int, predictor, info, rng: np.random.Generator) -> tuple[float, float]:
    """(s per step of decisions, s per request of batched valuation) with ``n`` waiting."""
    pol = AugServePolicy(predictor)
    pol.reset(info)
    state = EngineState(now_s=0.0, free_blocks=1000, paused_blocks=0, num_running=50,
                        num_waiting=n, num_paused=0, last_step_s=0.02, step=0,
                        running_prefill_tokens=0, swap_budget_blocks=10, info=info)
    t0 = time.perf_counter()
    for v in views(n, rng):
        pol.on_enqueue(v, state)
    pol._flush(state)
    t_pred = (time.perf_counter() - t0) / n
    steps = 2000
    fresh = views(2 * steps, rng, start=n)  # built outside the timing: engine-side work
    t0 = time.perf_counter()
    for k in range(steps):
        for v in list(itertools.islice(pol.candidates(state, lambda v: True), 4))[:2]:
            pol.on_admit(v)
        for v in fresh[2 * k:2 * k + 2]:
            pol.on_enqueue(v, state)
        pol.token_budget(state)
    return (time.perf_counter() - t0) / steps, t_pred

if __name__ == "__main__":
    main()
