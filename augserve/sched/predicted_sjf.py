"""Stage I hook: shortest *predicted* remaining service first, static budget.

The predictor (anything implementing :class:`augserve.predictor.Predictor`, wired by Hydra)
predicts the tokens a request still has to generate; remaining service in engine iterations is
that plus the uncomputed context divided by the budget (a prefilled token costs 1/budget of an
iteration). KV mode at a call: InferCept's min-waste rule with the predicted tool time.
"""

from __future__ import annotations

from augserve.contract import EngineInfo, EngineState, KVMode, RequestView
from augserve.predictor import Predictor, predict_tool_s, reset_predictor
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.minwaste import min_waste
from augserve.sched.queue_policy import check_predictor


class PredictedSJFPolicy(KeyedPolicy):
    """Order the waiting queue by predicted remaining service (lower first)."""

    name = "predicted_sjf"

    def __init__(self, predictor: Predictor | None = None,
                 max_num_batched_tokens: int = 2048) -> None:
        self.predictor = check_predictor("predicted_sjf", predictor)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)

    def remaining_service(self, view: RequestView) -> tuple[float, float]:
        """(iterations left, predicted tool time per call in s) for ``view``."""
        p = self.predictor.predict_remaining([view])
        decode_left = max(float(p.output_tokens[0]), 1.0)
        prefill_left = view.context_tokens - view.computed_tokens
        return decode_left + prefill_left / self.budget, float(p.tool_s[0])

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        reset_predictor(self.predictor)

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        return (self.remaining_service(view)[0], view.arrival_s)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        tool_s = float(predict_tool_s(self.predictor, [view])[0])
        return min_waste(view.context_tokens, tool_s, state).best()
