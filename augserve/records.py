"""Per-request records: what an engine reports for each request (the input of metrics).

Units: seconds on the engine clock (0 = start of the run), tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class RequestRecord:
    """Everything that happened to one request.

    ``token_s`` holds the emission time of every generated token in order (the tokens the model
    produced, not the tool's returned tokens). ``seg_start_idx[k]`` is the index in ``token_s`` of
    the first token of segment ``k``; ``tool_return_s[k]`` is when call ``k`` returned, so the
    resume latency of call ``k`` is ``token_s[seg_start_idx[k + 1]] - tool_return_s[k]``.
    """

    rid: str
    aug_type: str
    arrival_s: float
    prompt_tokens: int
    expected_output_tokens: int  # the script's total; equals len(token_s) when finished
    num_calls: int
    token_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    seg_start_idx: list[int] = field(default_factory=list)
    tool_start_s: list[float] = field(default_factory=list)
    tool_return_s: list[float] = field(default_factory=list)
    kv_modes: list[str] = field(default_factory=list)  # mode chosen at each call
    finished: bool = False
    finish_s: float = float("nan")
    preemptions: int = 0
    recomputed_tokens: int = 0  # prefill tokens spent re-building context that had been computed
    prefix_hit_tokens: int = 0  # context tokens reused from the prefix cache on (re)admission

    @property
    def output_tokens(self) -> int:
        return int(self.token_s.shape[0])

    @property
    def tool_time_s(self) -> float:
        """Time (s) spent inside tool calls (only calls that have returned)."""
        pairs = zip(self.tool_start_s, self.tool_return_s, strict=False)
        return float(sum(r - s for s, r in pairs))
