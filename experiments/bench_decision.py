"""Benchmark: a policy's scheduling cost per engine step vs waiting-queue length (not a test).

Requests are real tool-use requests (the ``toolmix`` workload: prompt text, tools, schemas
from ``../shared/data``), drawn with replacement as the workload draws them. Each simulated step
asks of the policy what the engine asks in ``make run``'s setting, rounded up (there: 0.13
arrivals, 0.6 tool calls and 0.6 tool returns per step):

* 1 arrival and 1 request back from a tool call enter the queue, valued in one batch (Stage I
  for the arrival: its prompt is hashed; Stage II re-prediction for the other),
* 1 running request reaches a tool call (``on_intercept``: the KV decision),
* the token budget is asked, and admission walks the candidates until 4 were looked at,
  admitting the first 2 (so the queue length stays where it is).

Reported, in µs per step at 100 / 1k / 10k waiting: ``augserve`` with the shipped LightGBM
predictor, split into valuation (the two entries), KV decision and the rest (budget, candidate
walk, admissions); ``augserve`` with a constant stub predictor (policy only; not a model);
``rl_ckpt`` (the shipped checkpoint): its decision (observation of the top 64, network,
ranking; a decision is pending at every step) after the same valuation. The queue is filled
before timing (untimed; the predictor's caches are empty before the fill), with requests already
past their TTFT deadline (as in overload). The fill sees prompts of the pool as a server would
have: a new arrival's prompt is hashed in the timed step unless the pool drew it before, which
happens more often the larger the fill (the workload repeats prompts), so valuation is cheaper
per step at 10k than at 100. Targets: augserve < 100 µs per step at 1k waiting and < 1 ms at
10k; rl_ckpt < 0.5 ms per decision.

    python experiments/bench_decision.py [--data ../shared/data] [--steps 2000]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import deque
from pathlib import Path

import numpy as np

from augserve.contract import EngineInfo, EngineState, RequestView, State
from augserve.engine.factory import make_sim_engine
from augserve.predictor import Prediction
from augserve.request import AugRequest
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
    """The engine-side fields a RequestView reads: a request waiting after ``k`` returned calls
    (or, with ``paused``, at its ``k``-th call)."""

    def __init__(self, req: AugRequest, rid: str, now: float, k: int = 0,
                 paused: bool = False) -> None:
        self.req = _Renamed(req, rid, now)
        self.state = State.PAUSED if paused else State.WAITING
        self.submit_s = self.wait_since_s = now
        self.preempted = False
        self.seg_idx = k
        calls = [s.call for s in req.segments[:k] if s.call is not None]
        self.tool_durations = [c.duration_s for c in calls]
        self.return_lengths = [c.return_tokens for c in calls]
        self.current_tool = req.segments[k].call.kind if paused else None
        self._gen = sum(s.gen_tokens for s in req.segments[:k + (1 if paused else 0)])
        self._ctx = req.prompt_tokens + self._gen + sum(self.return_lengths)
        self.blocks = 0

    def generated(self) -> int:
        return self._gen

    def context(self) -> int:
        return self._ctx

    def computed_now(self) -> int:
        return self._ctx if self.state is State.PAUSED else 0


class _Renamed:
    """``req`` under another rid and arrival (requests are drawn with replacement)."""

    __slots__ = ("_r", "rid", "arrival_s")

    def __init__(self, req: AugRequest, rid: str, arrival_s: float) -> None:
        self._r, self.rid, self.arrival_s = req, rid, arrival_s

    def __getattr__(self, name: str):
        return getattr(self._r, name)


class Stream:
    """Views of real requests: fresh arrivals; tool calls of requests admitted earlier; their
    returns (as in an engine, a request reaches the policy again only after it was seen)."""

    def __init__(self, pool: list[AugRequest], seed: int) -> None:
        self.pool = [r for r in pool if r.num_calls > 0]
        self.rng = np.random.default_rng(seed)
        self.n = 0
        self.running: deque[RequestView] = deque()  # admitted, not yet at a call
        self.paused: deque[RequestView] = deque()  # in a tool call

    def view(self, now: float) -> RequestView:
        """A new arrival."""
        req = self.pool[int(self.rng.integers(len(self.pool)))]
        self.n += 1
        return RequestView(_Runtime(req, f"a{self.n}", now))

    def admitted(self, view: RequestView) -> None:
        self.running.append(view)

    def call(self, now: float) -> RequestView:
        """The oldest running request reaches its first call (a new arrival if none runs)."""
        v = self.running.popleft() if self.running else self.view(now)
        r = v._r  # noqa: SLF001 - the bench's own runtime
        call = RequestView(_Runtime(r.req._r, r.req.rid, r.req.arrival_s, 0, paused=True))
        self.paused.append(call)
        return call

    def back(self, now: float) -> RequestView:
        """The oldest paused request returns from its call and waits again."""
        v = self.paused.popleft() if self.paused else self.call(now) and self.paused.popleft()
        r = v._r  # noqa: SLF001
        back = _Runtime(r.req._r, r.req.rid, r.req.arrival_s, 1)
        back.submit_s = back.wait_since_s = now
        return RequestView(back)


def state_at(info: EngineInfo, n: int, now: float) -> EngineState:
    return EngineState(now_s=now, free_blocks=info.total_blocks // 2, paused_blocks=0,
                       num_running=min(64, info.max_num_seqs - 1), num_waiting=n, num_paused=4,
                       last_step_s=0.03, step=int(now / 0.03), running_prefill_tokens=512,
                       waiting_prefill_tokens=400 * n, swap_budget_blocks=10, info=info)


def fill(pol, stream: Stream, info: EngineInfo, n: int) -> None:
    """Put ``n`` requests in the queue, arrived 20 s ago (their TTFT deadlines passed)."""
    st = state_at(info, n, 0.0)
    for _ in range(n):
        pol.on_enqueue(stream.view(-20.0), st)
    pol._flush(st)


def steps(pol, stream: Stream, info: EngineInfo, n: int, k: int) -> dict[str, float]:
    """µs per step of each part of the engine's questions (module docstring), ``n`` waiting."""
    now = 1.0
    t = {"valuation": 0.0, "kv": 0.0, "budget": 0.0, "walk": 0.0}
    clock = time.perf_counter
    for i in range(k):
        st = state_at(info, n, now + 0.03 * i)
        arrival, back, call = stream.view(st.now_s), stream.back(st.now_s), stream.call(st.now_s)
        t0 = clock()
        pol.on_enqueue(arrival, st)
        pol.on_enqueue(back, st)
        pol._flush(st)
        t1 = clock()
        pol.on_intercept(call, st)
        t2 = clock()
        pol.on_step(st)  # rl_ckpt: the decision
        pol.token_budget(st)
        t3 = clock()
        admitted = list(itertools.islice(pol.candidates(st, lambda v: True), 4))[:2]
        for v in admitted:
            pol.on_admit(v)
        t4 = clock()
        for v in admitted:
            stream.admitted(v)
        t["valuation"] += t1 - t0
        t["kv"] += t2 - t1
        t["budget"] += t3 - t2
        t["walk"] += t4 - t3
    return {key: v / k * 1e6 for key, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--sizes", default="100,1000,10000")
    args = ap.parse_args()
    from predictors.artifact import load_predictor
    from predictors.workload import make_dataset_workload
    from rl.rl_policy import make_rl_policy

    pool = make_dataset_workload(
        sources=["toolbench_cot", "api_bank", "toolalpaca", "tooltalk", "bfcl"],
        data_dir=args.data, rate=5.0, duration_s=600.0).requests(0)
    info = make_sim_engine().info()
    art = str(ROOT / "data" / "predictors" / "lgbm")
    print(f"toolmix ({len(pool)} requests drawn); per step: 1 arrival, 1 tool return, 1 tool "
          f"call, the budget, 4 candidates looked at, 2 admitted; µs per step")
    print(f"{'waiting':>8} | {'augserve':>8} {'valuation':>9} {'KV dec.':>8} {'rest':>6} | "
          f"{'policy only':>11} | {'rl_ckpt decision':>16}")
    makers = {
        "pred": lambda: AugServePolicy(load_predictor(art), slo="ttft:1000"),
        "stub": lambda: AugServePolicy(ConstantStub(), slo="ttft:1000"),
        "rl": lambda: make_rl_policy("data/rl/ppo", load_predictor(art), slo="ttft:1000"),
    }
    for n in (int(x) for x in args.sizes.split(",")):
        res = {}
        for name, make in makers.items():
            pol = make()
            pol.reset(info)  # empties the predictor's caches (the fill below refills them)
            stream = Stream(pool, seed=n)
            fill(pol, stream, info, n)
            res[name] = steps(pol, stream, info, n, args.steps)
        p = res["pred"]
        print(f"{n:>8,} | {sum(p.values()):>8.1f} {p['valuation']:>9.1f} {p['kv']:>8.1f} "
              f"{p['budget'] + p['walk']:>6.1f} | {sum(res['stub'].values()):>11.1f} | "
              f"{res['rl']['budget']:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
