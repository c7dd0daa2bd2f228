"""vLLM's own behaviour: FCFS by (re)submission, a static token budget, requests end at a call."""

from __future__ import annotations

from augserve.contract import EngineState, KVMode, RequestView
from augserve.sched.keyed import KeyedPolicy


class VLLMPolicy(KeyedPolicy):
    """First come, first served by submission time; a continuation after a tool call is a new
    submission at the tail. Preempted requests go back to the front, most recent first (V1's
    ``waiting.prepend_request``)."""

    name = "vllm"

    def __init__(self, max_num_batched_tokens: int = 2048, name: str | None = None) -> None:
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)
        if name:
            self.name = name

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        if view.preempted:
            return (0, -view.wait_since_s)
        return (1, view.submit_s)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM
