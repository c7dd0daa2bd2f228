"""SLO-aware FCFS: vLLM's or InferCept's order with AugServe's deadline triage and tier.

The baseline that "knows the SLO" but predicts nothing: the same two mechanisms AugServe adds
on top of its value (:mod:`augserve.sched.augserve`), applied to a first-come-first-served key:

* **order** — ``submit`` (vLLM: by (re)submission, a continuation after a tool call at the
  tail) or ``arrival`` (InferCept: by the request's original arrival); preempted requests
  first, most recent first, as V1's ``waiting.prepend_request`` does;
* **triage** — a request still without its first token when its TTFT deadline passes goes
  ``late_penalty`` seconds behind (:class:`~augserve.sched.deadline.TTFTTriage`; 1e9 s is
  behind any arrival time);
* **starvation tier** — after ``starve_after_s`` in the queue a request joins a FIFO tier that
  gets one admission every ``starve_every_s`` (the configs give AugServe's values, tuned or
  its defaults 15 s and 1 s;
  :mod:`augserve.sched.value_queue` proves the bound);
* **KV at a call** — ``kv: vllm`` (the request ends at the call) or ``kv: infercept``
  (min-waste on the mean observed tool time, :mod:`augserve.sched.kv_choice`).

Rows ``vllm_slo`` and ``infercept_slo`` (``conf/policy/``). Static budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineInfo, EngineState, KVMode, RequestView
from augserve.sched.deadline import TTFTTriage, ttft_s
from augserve.sched.kv_choice import MeanToolMinWaste
from augserve.sched.queue_policy import ValueQueuePolicy
from augserve.slo import SLOSpec

#: key of a preempted request: before every on-time one (seconds; run clocks start at 0 and
#: stay below 1e8 s), yet a late first token still goes behind them (``late_penalty`` 1e9 s)
PREEMPTED_KEY = -1e8


class FCFSSLOPolicy(ValueQueuePolicy):
    """FCFS (``order``) + TTFT triage + rate-limited starvation tier; KV per ``kv``."""

    name = "fcfs_slo"

    def __init__(
        self,
        order: str = "submit",
        kv: str = "vllm",
        max_num_batched_tokens: int = 2048,
        slo: SLOSpec | dict = None,
        late_penalty: float = 1e9,
        starve_after_s: float | None = 15.0,
        starve_every_s: float = 1.0,
        default_tool_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        if order not in ("submit", "arrival"):
            raise ValueError(f"order={order!r}: expected 'submit' (vLLM) or 'arrival' (InferCept)")
        if kv not in ("vllm", "infercept"):
            raise ValueError(f"kv={kv!r}: expected 'vllm' or 'infercept'")
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        if late_penalty <= -PREEMPTED_KEY:
            raise ValueError(f"late_penalty={late_penalty:g} s must exceed {-PREEMPTED_KEY:g} s: "
                             "a late first token goes behind every on-time request, preempted "
                             "ones included")
        self.order = order
        self.budget = int(max_num_batched_tokens)
        self.kv = MeanToolMinWaste(default_tool_s) if kv == "infercept" else None
        self.triage = TTFTTriage(ttft_s(slo), late_penalty)
        if self.triage.ttft_s is None:
            raise ValueError(f"policy {name or self.name} needs an SLO with a ttft threshold "
                             "(slo.spec)")
        if name:
            self.name = name
        super().__init__(starve_after_s, starve_every=starve_every_s)

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        if self.kv is not None:
            self.kv.clear()

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        t = [v.submit_s if self.order == "submit" else v.arrival_s for v in views]
        return np.array([PREEMPTED_KEY - v.wait_since_s if v.preempted else x
                         for v, x in zip(views, t, strict=True)], dtype=float)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_tool_return(self, view: RequestView, duration_s: float) -> None:
        if self.kv is not None:
            self.kv.observe(view, duration_s)

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM if self.kv is None else self.kv.choose(view, state)
