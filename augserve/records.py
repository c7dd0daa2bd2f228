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
    produced, not the tool's returned tokens); engines fill it when the run ends.
    ``seg_start_idx[k]`` is the index in ``token_s`` of the first token of segment ``k``.

    The per-turn fields are kept as things happen, so the record can be judged mid-run (the RL
    reward does): ``seg_first_s[k]`` is when segment ``k``'s first token came (equal to
    ``token_s[seg_start_idx[k]]``), ``tool_start_s[k]`` / ``tool_return_s[k]`` when call ``k``
    started and returned. Every SLO check reads them through the properties below
    (:func:`augserve.slo.record_meets`). ``rejected`` is the reason a policy turned the request
    away at admission (it never ran), or None.
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
    kv_expired: int = 0  # calls whose preserved KV was freed at its time-to-live
    kv_reclaimed: int = 0  # calls whose pinned KV was freed early, under memory pressure
    finished: bool = False
    finish_s: float = float("nan")
    preemptions: int = 0
    recomputed_tokens: int = 0  # prefill tokens spent re-building context that had been computed
    prefix_hit_tokens: int = 0  # context tokens reused from the prefix cache on (re)admission
    seg_first_s: list[float] = field(default_factory=list)  # first token of each segment (s)
    rejected: str | None = None  # the policy's reason for turning the request away

    @property
    def output_tokens(self) -> int:
        return int(self.token_s.shape[0])

    def segment_firsts(self) -> list[float]:
        """When each segment's first token came (s): ``seg_first_s`` as the engines keep it;
        for a record built from a token history alone (tests, rebuilt CSVs), read off
        ``token_s`` / ``seg_start_idx``."""
        if self.seg_first_s or not self.token_s.shape[0]:
            return self.seg_first_s
        n = self.token_s.shape[0]
        idx = self.seg_start_idx or [0]
        return [float(self.token_s[i]) for i in idx if i < n]

    @property
    def first_token_s(self) -> float:
        """When the first token came (s); NaN before it."""
        first = self.segment_firsts()
        return first[0] if first else float("nan")

    @property
    def ttft_s(self) -> float:
        """Time to first token (s): first token - arrival; NaN before it."""
        return self.first_token_s - self.arrival_s

    @property
    def e2el_s(self) -> float:
        """End-to-end latency (s): finish - arrival; NaN unless finished."""
        return self.finish_s - self.arrival_s if self.finished else float("nan")

    @property
    def resume_s(self) -> list[float]:
        """Resume latency (s) of each returned call whose next segment has a token:
        first token of segment ``k + 1`` - return of call ``k`` (a turn's TTFT)."""
        first = self.segment_firsts()
        return [first[k + 1] - ret for k, ret in enumerate(self.tool_return_s)
                if k + 1 < len(first)]

    @property
    def tool_time_s(self) -> float:
        """Time (s) spent inside tool calls (only calls that have returned)."""
        pairs = zip(self.tool_start_s, self.tool_return_s, strict=False)
        return float(sum(r - s for s, r in pairs))
