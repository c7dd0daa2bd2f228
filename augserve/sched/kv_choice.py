"""InferCept's KV decision without a predictor: min-waste on the mean observed tool time.

The tool duration is not known at the call; InferCept's released code reads the true one from
its workload file, which no serving system knows (the leak test would fail it), so it is
estimated as the mean of the durations observed so far for that tool kind (``default_tool_s``
before the first return of a kind). Shared by ``infercept`` and the predictor-free SLO-aware
baselines.
"""

from __future__ import annotations

from collections.abc import Sequence

from augserve.contract import EngineState, KVMode, RequestView
from augserve.sched.kind_means import KindMeans
from augserve.sched.minwaste import min_waste


class MeanToolMinWaste:
    """Min-waste mode among ``modes`` for a call of the kind's mean observed duration (s)."""

    def __init__(self, default_tool_s: float = 1.0,
                 modes: Sequence[str] = ("preserve", "discard", "swap")) -> None:
        if default_tool_s < 0:
            raise ValueError(f"default_tool_s={default_tool_s} must be >= 0")
        self.default_tool_s = float(default_tool_s)
        self.modes = tuple(KVMode(m) for m in modes)
        if not self.modes or KVMode.VLLM in self.modes:
            raise ValueError(f"modes must be a non-empty subset of preserve/discard/swap: {modes}")
        self.tool_s = KindMeans(self.default_tool_s)

    def clear(self) -> None:
        self.tool_s.clear()

    def estimate(self, kind: str | None) -> float:
        return self.tool_s.mean(kind)

    def observe(self, view: RequestView, duration_s: float) -> None:
        self.tool_s.add(view.current_tool or view.aug_type, duration_s)

    def choose(self, view: RequestView, state: EngineState) -> KVMode:
        if len(self.modes) == 1:
            return self.modes[0]
        w = min_waste(view.context_tokens, self.estimate(view.current_tool or view.aug_type), state)
        best = {KVMode.PRESERVE: w.preserve, KVMode.DISCARD: w.discard, KVMode.SWAP: w.swap}
        return min(self.modes, key=lambda m: (best[m], self.modes.index(m)))
