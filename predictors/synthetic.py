"""Synthetic :class:`ToolUseRow` sets and request views for tests and benchmarks.

Output length depends on the prompt's words and the source, so models have signal to learn.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np

from predictors.features import SOURCES
from predictors.schema import ToolUseRow

_WORDS = {
    "short": ["what", "is", "convert", "lookup", "check", "price", "weather", "time"],
    "long": ["explain", "plan", "write", "essay", "compare", "detailed", "itinerary", "story"],
}


def synthetic_rows(n: int = 600, seed: int = 0,
                   sources: tuple[str, ...] = SOURCES) -> list[ToolUseRow]:
    """``n`` rows spread over ``sources``; infercept_mix rows carry ``meta["tool_s"]``."""
    rng = np.random.default_rng(seed)
    rows: list[ToolUseRow] = []
    for i in range(n):
        src = sources[i % len(sources)]
        longish = rng.random() < 0.5
        words = list(rng.choice(_WORDS["long" if longish else "short"], size=6))
        words += list(rng.choice(_WORDS["short"] + _WORDS["long"], size=4))
        text = " ".join(str(w) for w in words) + f" item{rng.integers(50)}"
        n_calls = int(rng.poisson(3.0 if longish else 1.0))
        base = 80.0 if longish else 20.0
        segs = [max(1, int(rng.lognormal(np.log(base), 0.4))) for _ in range(n_calls + 1)]
        rets = [int(rng.integers(5, 200)) for _ in range(n_calls)]
        tools = [f"tool{j}" for j in range(int(rng.integers(1, 6)))]
        meta: dict = {}
        aug = "other"
        if src == "infercept_mix":
            aug = ("math", "qa", "chatbot")[i % 3]
            scale = {"math": 1e-4, "qa": 0.7, "chatbot": 20.0}[aug]
            meta["tool_s"] = [float(scale * rng.lognormal(0, 0.3)) for _ in range(n_calls)]
        row = ToolUseRow(
            source=src, rid=f"{src}-{i}", group=f"g{i // 3}", prompt_text=text,
            prompt_tokens=len(words) + 20 + int(rng.integers(0, 30)), tools=tools,
            tools_schema_tokens=40 * len(tools), calls=[f"tool{j % 3}" for j in range(n_calls)],
            segment_tokens=list(segs), return_tokens=list(rets), response_tokens=segs[-1],
            aug_type=aug, meta=meta,
        )
        row.validate()
        rows.append(row)
    return rows


def row_to_request(row: ToolUseRow, arrival_s: float = 0.0) -> Any:
    """An ``AugRequest`` playing ``row`` (unknown lengths -> 1 token / 0 returned, tool 0 s)."""
    from augserve.request import AugRequest, Segment, ToolCall

    ts = row.meta.get("tool_s") or [0.0] * row.num_calls
    segs = []
    for k, g in enumerate(row.segment_tokens):
        call = None
        if k < row.num_calls:
            call = ToolCall(row.calls[k], float(ts[k]), int(row.return_tokens[k] or 0))
        segs.append(Segment(max(1, int(g or 1)), call))
    meta = {"source": row.source, "tools": list(row.tools),
            "tools_schema_tokens": row.tools_schema_tokens}
    return AugRequest(row.rid, arrival_s, row.prompt_tokens + row.tools_schema_tokens,
                      tuple(segs), row.aug_type, row.prompt_text, MappingProxyType(meta))


class FakeRuntime:
    """The engine-side fields a ``RequestView`` reads, frozen after ``k`` returned calls."""

    def __init__(self, req: Any, k: int = 0) -> None:
        from augserve.contract import State

        self.req = req
        self.state = State.WAITING
        self.seg_idx = k
        self.tool_durations = [s.call.duration_s for s in req.segments[:k]]
        self.return_lengths = [s.call.return_tokens for s in req.segments[:k]]
        self.current_tool = None
        self._gen = sum(s.gen_tokens for s in req.segments[:k])

    def generated(self) -> int:
        return self._gen


def view_of(row: ToolUseRow, at_call: int = 0) -> Any:
    """A ``RequestView`` of ``row`` after ``at_call`` returned calls."""
    from augserve.contract import RequestView

    return RequestView(FakeRuntime(row_to_request(row), at_call))
