"""InferCept: FCFS by original arrival, min-waste KV mode per call, static chunked budget."""

from __future__ import annotations

from augserve.contract import EngineInfo, EngineState, KVMode, RequestView
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.kv_choice import MeanToolMinWaste


class InferCeptPolicy(KeyedPolicy):
    """InferCept (Abhyankar et al., ICML'24) on an iteration-level engine.

    KV mode: :class:`~augserve.sched.kv_choice.MeanToolMinWaste` (the tool time is estimated as
    the kind's mean observed duration); ``modes`` restricts the choice (e.g. ``["preserve"]``
    for a preserve-only ablation).
    """

    name = "infercept"

    def __init__(
        self,
        max_num_batched_tokens: int = 384,
        default_tool_s: float = 1.0,
        modes: tuple[str, ...] | list[str] = ("preserve", "discard", "swap"),
        name: str | None = None,
    ) -> None:
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)
        self.kv = MeanToolMinWaste(default_tool_s, modes)
        if name:
            self.name = name

    @property
    def modes(self) -> tuple[KVMode, ...]:
        return self.kv.modes

    @property
    def default_tool_s(self) -> float:
        return self.kv.default_tool_s

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        self.kv.clear()

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        return (0 if view.preempted else 1, view.arrival_s)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def tool_estimate(self, kind: str | None) -> float:
        return self.kv.estimate(kind)

    def on_tool_return(self, view: RequestView, duration_s: float) -> None:
        self.kv.observe(view, duration_s)

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return self.kv.choose(view, state)
