"""AugServe: Stage I value at arrival, Stage II runtime refinement, dynamic token budget.

**Value** (engine iterations; lower is served first), following AugServe's service-time model:
every decode token costs one iteration, every prefilled token (prompt, tool returns, recomputed
context) ``1/N_max`` of one (``N_max`` = the step budget ``max_num_batched_tokens``), and every
expected tool call adds the interception cost of the KV mode the min-waste rule would pick::

    V = out + (prefill + calls·ret) / N_max + calls · I(C, T)
    I(C, T) = min(preserve, discard, swap waste of C context tokens for a T-second call)
              / (KV capacity in tokens · step time)

(the min-waste wastes are token·seconds of idle KV, see :mod:`augserve.sched.minwaste`; dividing by
capacity × step time turns them into iterations of the whole engine.) ``out``, ``calls`` and
``T`` come from the predictor; ``ret`` (tokens a call returns) is the running mean of returns
per tool kind, read under the request's last tool (before its first call: the running mean per
request type, ``aug_type``, which every return also feeds).

* **Stage I** — at arrival, ``Predictor.predict`` (arrival features only).
* **Stage II** — whenever a request (re-)enters the waiting queue (arrival, tool return,
  preemption), ``Predictor.predict_remaining`` re-predicts what is *left* from runtime features
  (tokens generated versus predicted, calls made, the last return length, elapsed tool time); the
  actual uncomputed context (returned tokens, discarded KV to recompute) replaces estimates.
  Waiting time, against the SLO: a request still without its first token when its TTFT deadline
  passes can no longer meet the SLO, so it is re-keyed behind every request that still can
  (``late_penalty`` iterations; O(log n) once per request, from a deadline heap) — the starvation
  tier still bounds its wait. Optional linear aging (``age_weight`` iterations per iteration
  waited; off by default: under sustained overload it drifts towards FCFS of requests that have
  already missed their SLO). Memory pressure: up to ``lookahead`` requests that
  do not fit the free KV are passed over for later ones that do. Starvation: a request waiting
  ``starve_after_s`` is promoted to a FIFO tier that gets one admission every
  ``starve_every_s`` (its head is then never passed over), which bounds its wait without letting
  a backlog of requests that already missed their SLO take over the engine under overload
  (:mod:`augserve.sched.value_queue` states and proves the bound).
* **Budget** — :class:`augserve.sched.budget.DynamicBudget`, or static ``max_num_batched_tokens``.

Predictions are batched: requests entering the queue between two steps are predicted together
when the engine next asks for candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, KVMode, RequestView
from augserve.predictor import Prediction, Predictor, predict_tool_s
from augserve.sched.budget import DynamicBudget
from augserve.sched.deadline import TTFTTriage, ttft_s
from augserve.sched.kind_means import KindMeans
from augserve.sched.minwaste import min_waste
from augserve.sched.queue_policy import ValueQueuePolicy, check_predictor


def intercept_cost(context_tokens: float, tool_s: float, state: EngineState) -> float:
    """Iterations of engine capacity a call of ``tool_s`` s on this context wastes (min mode)."""
    info = state.info
    w = min_waste(int(context_tokens), tool_s, state)
    step = state.last_step_s if state.last_step_s > 0 else info.step_floor_s
    cap = info.total_blocks * info.block_size
    return min(w.preserve, w.discard, w.swap) / (cap * step) if cap and step else 0.0


class AugServePolicy(ValueQueuePolicy):
    """The AugServe scheduler (see the module docstring). Ablations through the flags."""

    name = "augserve"

    def __init__(
        self,
        predictor: Predictor | None = None,
        max_num_batched_tokens: int = 2048,
        stage2: bool = True,
        dynamic_budget: bool = True,
        starve_after_s: float | None = 15.0,
        starve_every_s: float = 1.0,
        age_weight: float = 0.0,
        slo: str | dict | None = None,
        late_penalty: float = 1e6,
        lookahead: int = 8,
        budget: dict | None = None,
        default_return_tokens: float = 32.0,
        name: str | None = None,
    ) -> None:
        self.predictor = check_predictor("augserve", predictor)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.n_max = int(max_num_batched_tokens)
        self.stage2 = bool(stage2)
        self.dynamic = bool(dynamic_budget)
        self.budget_rule = DynamicBudget(**(budget or {}))
        self.default_return_tokens = float(default_return_tokens)
        self.triage = TTFTTriage(ttft_s(slo) if self.stage2 else None, late_penalty)
        if name:
            self.name = name
        # Stage I alone: no runtime refinement, no aging, no starvation tier, no skipping
        super().__init__(starve_after_s if self.stage2 else None,
                         age_weight if self.stage2 else 0.0, lookahead if self.stage2 else 0,
                         starve_every_s)

    @property
    def ttft_s(self) -> float | None:
        """The TTFT deadline (s) the queue triages by (None: off)."""
        return self.triage.ttft_s

    @property
    def late_penalty(self) -> float:
        return self.triage.late_penalty

    def _reset_queue(self) -> None:
        super()._reset_queue()
        self._arrival_value: dict[str, float] = {}
        self._returns = KindMeans(self.default_return_tokens)
        self._last_tool: dict[str, str] = {}  # rid -> kind of its last returned call
        self.pred_cache: dict[str, tuple[float, float, float, float]] = {}

    def on_leave(self, view: RequestView) -> None:
        super().on_leave(view)
        # what the policy kept per request: bounded by the requests in the engine
        self._arrival_value.pop(view.rid, None)
        self.pred_cache.pop(view.rid, None)
        self._last_tool.pop(view.rid, None)

    # ------------------------------------------------------------------ values
    def mean_return(self, kind: str | None) -> float:
        return self._returns.mean(kind)

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        """Remaining service (iterations): Stage I for new requests (or always, without
        Stage II), Stage II re-prediction for requests seen before."""
        out = np.empty(len(views))
        first = [i for i, v in enumerate(views) if v.rid not in self._arrival_value]
        if first:
            p = self.predictor.predict([views[i] for i in first])
            for j, i in enumerate(first):
                out[i] = self._arrival_value[views[i].rid] = self._value(views[i], p, j, state)
        firsts = set(first)
        later = [i for i in range(len(views)) if i not in firsts]
        if later and self.stage2:
            p = self.predictor.predict_remaining([views[i] for i in later])
            for j, i in enumerate(later):
                out[i] = self._value(views[i], p, j, state)
        elif later:
            for i in later:
                out[i] = self._arrival_value[views[i].rid]
        return out

    def _value(self, v: RequestView, p: Prediction, j: int, state: EngineState) -> float:
        out = max(float(p.output_tokens[j]), 1.0)
        calls = max(float(p.num_calls[j]), 0.0)
        tool_s = max(float(p.tool_s[j]), 0.0)
        kind = v.current_tool or self._last_tool.get(v.rid) or v.aug_type
        prefill = (v.context_tokens - v.computed_tokens) + calls * self.mean_return(kind)
        icost = intercept_cost(v.context_tokens + out / 2, tool_s, state) if calls else 0.0
        value = out + prefill / self.n_max + calls * icost
        self.pred_cache[v.rid] = (out, calls, tool_s, value)
        return value

    # ------------------------------------------------------------------ budget and KV mode
    def token_budget(self, state: EngineState) -> int:
        if not self.dynamic:
            return self.n_max
        return self.budget_rule(state, state.waiting_prefill_tokens)

    def on_tool_return(self, view: RequestView, duration_s: float) -> None:
        if view.observed_return_tokens:
            ret = view.observed_return_tokens[-1]
            kind = view.current_tool or view.aug_type
            self._returns.add(kind, ret)
            if view.aug_type != kind:  # what requests of this type get before their first call
                self._returns.add(view.aug_type, ret)
            self._last_tool[view.rid] = kind

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        tool_s = float(predict_tool_s(self.predictor, [view])[0])
        return min_waste(view.context_tokens, tool_s, state).best()
