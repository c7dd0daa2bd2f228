"""InferCept: FCFS by original arrival, min-waste KV mode per call, static chunked budget."""

from __future__ import annotations

from augserve.contract import EngineInfo, EngineState, KVMode, RequestView
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.kind_means import KindMeans
from augserve.sched.minwaste import min_waste


class InferCeptPolicy(KeyedPolicy):
    """InferCept (Abhyankar et al., ICML'24) on an iteration-level engine.

    The tool duration is not known at the call; it is estimated as the mean of the durations
    observed so far for that tool kind (``default_tool_s`` before the first return of a kind).
    ``modes`` restricts the choice (e.g. ``["preserve"]`` for a preserve-only ablation).
    """

    name = "infercept"

    def __init__(
        self,
        max_num_batched_tokens: int = 384,
        default_tool_s: float = 1.0,
        modes: tuple[str, ...] | list[str] = ("preserve", "discard", "swap"),
    ) -> None:
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        if default_tool_s < 0:
            raise ValueError(f"default_tool_s={default_tool_s} must be >= 0")
        self.budget = int(max_num_batched_tokens)
        self.default_tool_s = float(default_tool_s)
        self.modes = tuple(KVMode(m) for m in modes)
        if not self.modes or KVMode.VLLM in self.modes:
            raise ValueError(f"modes must be a non-empty subset of preserve/discard/swap: {modes}")
        self._tool_s = KindMeans(self.default_tool_s)

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        self._tool_s.clear()

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        return (0 if view.preempted else 1, view.arrival_s)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def tool_estimate(self, kind: str | None) -> float:
        return self._tool_s.mean(kind)

    def on_tool_return(self, view: RequestView, duration_s: float) -> None:
        self._tool_s.add(view.current_tool or view.aug_type, duration_s)

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        if len(self.modes) == 1:
            return self.modes[0]
        w = min_waste(view.context_tokens, self.tool_estimate(view.current_tool), state)
        best = {KVMode.PRESERVE: w.preserve, KVMode.DISCARD: w.discard, KVMode.SWAP: w.swap}
        return min(self.modes, key=lambda m: (best[m], self.modes.index(m)))
