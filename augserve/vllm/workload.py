"""Shrink a workload to what a CPU model can serve: scaled lengths and tool times.

A 170M-parameter model on one CPU core prefills ~1000 tokens/s and decodes a batch in ~25 ms,
so augmix at full size (prompts of 400-2000 tokens, tool calls of up to five minutes) would need
hours. :class:`ScaledWorkload` keeps the arrival process and the script shapes (number of calls,
tool kinds, types) and multiplies every length and every tool duration.
"""

from __future__ import annotations

from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload.base import Workload


def scale_request(r: AugRequest, length_scale: float, tool_scale: float) -> AugRequest:
    """``r`` with prompt, generated and returned tokens × ``length_scale`` (at least 1 token
    per segment and prompt) and tool durations × ``tool_scale``."""
    def n(x: int, lo: int) -> int:
        return max(lo, round(x * length_scale))

    segs = tuple(
        Segment(n(s.gen_tokens, 1), None if s.call is None else ToolCall(
            s.call.kind, s.call.duration_s * tool_scale, n(s.call.return_tokens, 0)))
        for s in r.segments
    )
    prompt = n(r.prompt_tokens, 1)
    prefix: list[tuple[str, int]] = []
    for key, t in r.prefix:  # scaled levels that stay distinct and within the prompt
        t = min(n(t, 1), prompt)
        if not prefix or t > prefix[-1][1]:
            prefix.append((key, t))
    return AugRequest(r.rid, r.arrival_s, prompt, segs, r.aug_type,
                      r.prompt_text, r.metadata, r.session_id, tuple(prefix))


class ScaledWorkload(Workload):
    """``base`` with lengths × ``length_scale`` and tool durations × ``tool_scale``; scripts are
    then cut to ``max_model_len`` if given. Arrivals are unchanged."""

    def __init__(self, base: Workload, length_scale: float = 1.0, tool_scale: float = 1.0,
                 max_model_len: int | None = None) -> None:
        if not length_scale > 0 or not tool_scale >= 0:
            raise ValueError("length_scale must be > 0 and tool_scale >= 0")
        self.base = base
        self.length_scale = float(length_scale)
        self.tool_scale = float(tool_scale)
        self.max_model_len = max_model_len
        self.duration_s = getattr(base, "duration_s", None)

    def requests(self, seed: int) -> list[AugRequest]:
        out = [scale_request(r, self.length_scale, self.tool_scale)
               for r in self.base.requests(seed)]
        if self.max_model_len is not None:
            out = [r.fit_context(self.max_model_len) for r in out]
        return out

