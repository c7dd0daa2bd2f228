"""LAMPS (Shahout et al., 2024): rank by predicted memory × time, including the KV-mode choice.

A request's score is the KV memory it will occupy over the rest of its life, in
token·iterations: decoding ``out`` more tokens on a context of ``C`` holds about
``out · (C + out/2)``; each expected tool call adds the min-waste mode's waste (token·seconds
converted to token·iterations with the step time). Lower score first. Starvation prevention:
a request waiting ``starve_after_s`` is promoted (FIFO) ahead of the ranking. Static budget;
KV mode at a call by min-waste on the predicted tool time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, KVMode, RequestView
from augserve.predictor import Predictor, predict_tool_s
from augserve.sched.minwaste import min_waste
from augserve.sched.queue_policy import ValueQueuePolicy, check_predictor


class LAMPSPolicy(ValueQueuePolicy):
    name = "lamps"

    def __init__(self, predictor: Predictor | None = None, max_num_batched_tokens: int = 2048,
                 starve_after_s: float | None = 15.0) -> None:
        self.predictor = check_predictor("lamps", predictor)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)
        super().__init__(starve_after_s)

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        p = self.predictor.predict_remaining(views)
        step = state.last_step_s if state.last_step_s > 0 else self.info.step_floor_s
        out = np.empty(len(views))
        for i, v in enumerate(views):
            n = max(float(p.output_tokens[i]), 1.0)
            calls = max(float(p.num_calls[i]), 0.0)
            ctx = float(v.context_tokens)
            score = n * (ctx + n / 2)
            if calls:
                w = min_waste(int(ctx + n / 2), max(float(p.tool_s[i]), 0.0), state)
                score += calls * min(w.preserve, w.discard, w.swap) / (step or 1e-3)
            out[i] = score
        return out

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        tool_s = float(predict_tool_s(self.predictor, [view])[0])
        return min_waste(view.context_tokens, tool_s, state).best()
