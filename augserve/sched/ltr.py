"""vLLM-LTR (Fu et al., 2024): shortest predicted *rank* first, with a starvation guard.

Requests are ordered by the ranking model's score at arrival (``Prediction.rank_score``, lower =
shorter), which the LTR paper shows orders better than regressing lengths. Starvation guard: a
request left waiting for ``starve_after_steps`` engine steps is promoted (FIFO) ahead of the
ranking. Static budget; KV mode: vLLM's (the request ends at the call), as LTR runs on vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, KVMode, RequestView
from augserve.predictor import Predictor
from augserve.sched.queue_policy import ValueQueuePolicy, check_predictor


class LTRPolicy(ValueQueuePolicy):
    name = "ltr"
    clock_unit = "steps"

    def __init__(self, predictor: Predictor | None = None, max_num_batched_tokens: int = 2048,
                 starve_after_steps: int | None = 500) -> None:
        self.predictor = check_predictor("ltr", predictor)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)
        super().__init__(None if starve_after_steps is None else float(starve_after_steps))

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        return np.asarray(self.predictor.predict_remaining(views).rank_score, dtype=float)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM
