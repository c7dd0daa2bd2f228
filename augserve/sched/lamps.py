"""LAMPS (Shahout et al., arXiv 2410.18248, "Fast Inference for Augmented Large Language
Models"): rank by predicted memory × time, including the KV-mode choice.

Source: the released code, ``mars-repository/mars-codebase`` (a fork of InferCept;
``vllm/core/scheduler.py`` and ``policy.py``). A request's score is the KV memory it will occupy
over the rest of its life, in token·iterations: decoding ``out`` more tokens on a context of
``C`` holds about ``out · (C + out/2)``; each expected tool call adds the min-waste mode's waste
(token·seconds converted to token·iterations with the step time). Lower score first. Starvation
prevention as its run script sets it (``--starvation-threshold 100 --starvation-quantum
100000``): a request that has already run once (resumed after a call, or preempted) and has
waited more than ``starve_after_steps`` = 100 scheduler iterations (its counter *exceeds* the
threshold) is promoted ahead of the ranking; a quantum of 100000 iterations makes the promotion
last until it is admitted. New requests are never promoted (the counter only runs for requests
that have run). Static budget (the released code inherits vLLM's); KV mode at a call by
min-waste on the predicted tool time (the released code chooses once, when the segment arrives,
on the same waste terms; the predictor here is the Stage I artifact, the released code's an
OPT-125M classifier or the true values)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, KVMode, RequestView
from augserve.predictor import Predictor, predict_tool_s
from augserve.sched.minwaste import min_waste
from augserve.sched.queue_policy import ValueQueuePolicy, check_predictor

STARVE_AFTER_STEPS = 100  # --starvation-threshold 100 (mars-codebase run script)


class LAMPSPolicy(ValueQueuePolicy):
    name = "lamps"
    clock_unit = "steps"

    def __init__(self, predictor: Predictor | None = None, max_num_batched_tokens: int = 2048,
                 starve_after_steps: int | None = STARVE_AFTER_STEPS) -> None:
        self.predictor = check_predictor("lamps", predictor)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)
        # promoted once the wait counter exceeds the threshold: after threshold + 1 steps
        super().__init__(None if starve_after_steps is None else float(starve_after_steps) + 1)

    def starves(self, view: RequestView) -> bool:
        return view.calls_done > 0 or view.preempted  # it has run once

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
