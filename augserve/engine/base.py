"""The engine protocol: run a request stream under a policy and return per-request records."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from augserve.records import RequestRecord
from augserve.request import AugRequest
from augserve.sched.base import Policy


@dataclass(slots=True)
class RunResult:
    """What one engine run produced. Times in seconds on the engine clock."""

    records: list[RequestRecord]
    end_s: float  # engine clock when the run stopped (last finish, or the time limit)
    stats: dict[str, Any] = field(default_factory=dict)  # engine counters (steps, forward time…)


def validated(requests: Sequence[AugRequest], max_model_len: int,
              num_blocks: int, block_size: int) -> list[AugRequest]:
    """Requests sorted by arrival; a duplicate id, a context over ``max_model_len`` tokens or one
    that can never fit ``num_blocks`` KV blocks is an error naming the request."""
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    seen: set[str] = set()
    for r in reqs:
        if r.rid in seen:
            raise ValueError(f"duplicate request id {r.rid!r}")
        seen.add(r.rid)
        if r.final_context > max_model_len:
            raise ValueError(
                f"request {r.rid}: context reaches {r.final_context} tokens > "
                f"max_model_len={max_model_len}; fit the workload to the model first"
            )
        if r.final_context + 1 > num_blocks * block_size:
            raise ValueError(
                f"request {r.rid}: context of {r.final_context} tokens can never fit the "
                f"KV cache of {num_blocks} blocks"
            )
    return reqs


def next_event_time(pending: Sequence, next_arrival: int, tool_heap: list) -> float | None:
    """Earliest of the next arrival (``pending[next_arrival]``, objects with ``.req.arrival_s``,
    sorted) and the next tool return (heap of ``(time, ...)``); None when neither is left (s)."""
    t = math.inf
    if next_arrival < len(pending):
        t = pending[next_arrival].req.arrival_s
    if tool_heap:
        t = min(t, tool_heap[0][0])
    return None if math.isinf(t) else t


class Engine(ABC):
    """An engine plays the model and the tools for a stream of :class:`AugRequest`."""

    @abstractmethod
    def run(
        self, requests: Sequence[AugRequest], policy: Policy, progress: bool = False
    ) -> RunResult:
        """Serve ``requests`` (sorted by arrival) under ``policy`` and return their records."""
