"""Clairvoyant shortest-remaining-service-first: the upper bound, never a default."""

from __future__ import annotations

from augserve.contract import EngineState, KVMode, RequestView
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.minwaste import min_waste


class OraclePolicy(KeyedPolicy):
    """Reads each request's script (``oracle=True``) to order by remaining service.

    Remaining service in engine iterations: one per remaining decode token, ``1/budget`` per
    token still to prefill (uncomputed context plus future tool returns). KV mode: the min-waste
    rule with the true tool duration.
    """

    name = "oracle"
    oracle = True

    def __init__(self, max_num_batched_tokens: int = 2048) -> None:
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)

    def remaining_service(self, view: RequestView) -> float:
        script = view.script
        decode_left = script.output_tokens - view.generated_tokens
        returned_so_far = sum(view.observed_return_tokens)
        prefill_left = (view.context_tokens - view.computed_tokens) + (
            script.returned_tokens - returned_so_far
        )
        return decode_left + prefill_left / self.budget

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        return (self.remaining_service(view), view.arrival_s)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        call = view.script.segments[view.calls_done - 1].call
        return min_waste(view.context_tokens, call.duration_s, state).best()
