"""The request-script player both engines share: arrivals, segment ends, tool calls and returns.

An engine plays the model; the player plays everything else a request script says. It holds the
requests in arrival order, hands each one to the engine when it arrives, starts a tool call when
a segment ends (or finishes the request after its last segment), and when the tool returns, it
records the return, tells the policy and hands the request back to the engine with the call's
returned tokens. What the engine does with KV meanwhile (the KV mode) is the engine's business.

Every request is a :class:`Scripted` runtime the engine defines; the player fills the parts of
its :class:`~augserve.records.RequestRecord` that belong to the script (tool starts and returns,
finish time). Units: seconds on the engine clock, tokens.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from augserve.contract import RequestView
from augserve.records import RequestRecord
from augserve.request import AugRequest, ToolCall
from augserve.sched.base import Policy


class Scripted(Protocol):
    """An engine's runtime of one request, as the player (and the RL env) reads it."""

    req: AugRequest
    rec: RequestRecord
    seq: int  # position in arrival order
    seg_idx: int  # segment being played (or the call in progress, while paused)
    current_tool: str | None
    tool_durations: list[float]
    return_lengths: list[int]
    view: RequestView

    def generated(self) -> int:
        """Tokens generated so far."""

    def first_token_s(self) -> float | None:
        """When the first token came (s), or None before it."""


R = TypeVar("R", bound=Scripted)


def new_record(req: AugRequest) -> RequestRecord:
    """The record of ``req`` before it arrives (both engines start from this)."""
    return RequestRecord(
        rid=req.rid, aug_type=req.aug_type, arrival_s=req.arrival_s,
        prompt_tokens=req.prompt_tokens, expected_output_tokens=req.output_tokens,
        num_calls=req.num_calls,
    )


class ScriptPlayer(Generic[R]):
    """Plays the scripts of ``runtimes`` (sorted by arrival) against an engine.

    ``arrive(r)`` is called when ``r`` arrives, ``resume(r, t, call)`` when its tool ``call``
    returned at ``t`` (``r.seg_idx`` already points at the next segment).
    """

    def __init__(self, runtimes: list[R], policy: Policy, *,
                 arrive: Callable[[R], None], resume: Callable[[R, float, ToolCall], None],
                 progress: bool = False, desc: str = "run") -> None:
        self.reqs = runtimes  # the engine's own list (not copied)
        self.policy = policy
        self._arrive = arrive
        self._resume = resume
        self.next_arrival = 0  # requests arrived so far (index of the next one)
        self.tool_heap: list[tuple[float, int, R]] = []  # (return time s, seq, runtime)
        self.n_finished = 0
        self.done_log: list[R] = []  # finished since a driver last drained it
        self.pbar: Any = None
        if progress:
            from tqdm import tqdm

            self.pbar = tqdm(total=len(self.reqs), desc=desc, unit="req", leave=False)

    def all_finished(self) -> bool:
        return self.n_finished >= len(self.reqs)

    def next_event_time(self) -> float | None:
        """Earliest next arrival or tool return (s); None when neither is left."""
        t = math.inf
        if self.next_arrival < len(self.reqs):
            t = self.reqs[self.next_arrival].req.arrival_s
        if self.tool_heap:
            t = min(t, self.tool_heap[0][0])
        return None if math.isinf(t) else t

    def play_due(self, now: float) -> None:
        """Arrivals up to ``now``, then tool returns up to ``now``, in time order."""
        reqs = self.reqs
        while self.next_arrival < len(reqs) and reqs[self.next_arrival].req.arrival_s <= now:
            r = reqs[self.next_arrival]
            self.next_arrival += 1
            self._arrive(r)
        heap = self.tool_heap
        while heap and heap[0][0] <= now:
            t_ret, _, r = heapq.heappop(heap)
            call = r.req.segments[r.seg_idx].call
            assert call is not None
            r.rec.tool_return_s.append(t_ret)
            r.tool_durations.append(call.duration_s)
            r.return_lengths.append(call.return_tokens)
            self.policy.on_tool_return(r.view, call.duration_s)
            r.seg_idx += 1
            r.current_tool = None
            self._resume(r, t_ret, call)

    def end_segment(self, r: R, t: float) -> ToolCall | None:
        """``r``'s segment ended at ``t``: its tool call starts (returned; the return is
        scheduled), or, after the last segment, the request is finished (None)."""
        call = r.req.segments[r.seg_idx].call
        if call is None:
            r.rec.finished = True
            self._done(r, t)
            return None
        r.rec.tool_start_s.append(t)
        r.current_tool = call.kind
        heapq.heappush(self.tool_heap, (t + call.duration_s, r.seq, r))
        return call

    def reject(self, r: R, t: float, reason: str) -> None:
        """The policy turned ``r`` away at ``t`` (s) on arrival: it is done without running."""
        r.rec.rejected = reason
        self._done(r, t)

    def _done(self, r: R, t: float) -> None:
        r.rec.finish_s = t
        self.n_finished += 1
        self.done_log.append(r)
        if self.pbar is not None:
            self.pbar.update(1)

    def drain_finished(self) -> list[R]:
        """The requests finished since the last drain."""
        done, self.done_log = self.done_log, []
        return done

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
