"""The adapter for policies that order the waiting queue by a static key.

A :class:`KeyedPolicy` says what a request's key is when it enters the queue (``priority``,
lower first; computed once per entry) and gets the queue of the policy contract
(:class:`~augserve.sched.base.Policy`) for free: a heap with lazy deletion, O(log n) per event.
Ties go to the request first seen earlier (arrival order), which is kept for a request until it
leaves the engine.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from augserve.contract import EngineInfo, EngineState, RequestView
from augserve.sched.base import Policy
from augserve.sched.value_queue import heap_order


class KeyedPolicy(Policy):
    """A policy whose order is ``priority(view, state)``, fixed when a request enters."""

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        """Key fixed when ``view`` enters the waiting queue; lower is served first.
        Default: first come, first served by (re)submission time."""
        return (view.submit_s,)

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        self._heap: list[tuple[Any, int, int, RequestView]] = []  # (key, order, entry, view)
        self._live: dict[str, int] = {}  # rid -> entry number of its queue entry
        self._first_seen: dict[str, int] = {}  # rid -> arrival order, the key's tie-break
        self._entries = 0
        self._arrivals = 0

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        rid = view.rid
        order = self._first_seen.get(rid)
        if order is None:
            order = self._first_seen[rid] = self._arrivals
            self._arrivals += 1
        self._entries += 1
        self._live[rid] = self._entries
        heapq.heappush(self._heap, (self.priority(view, state), order, self._entries, view))

    def on_admit(self, view: RequestView) -> None:
        self._live.pop(view.rid, None)  # its heap entry is dropped once it comes up

    def on_leave(self, view: RequestView) -> None:
        self._live.pop(view.rid, None)
        self._first_seen.pop(view.rid, None)

    def _alive(self, e: tuple) -> bool:
        return self._live.get(e[3].rid) == e[2]

    def candidates(
        self, state: EngineState, fits: Callable[[RequestView], bool]
    ) -> Iterator[RequestView]:
        heap = self._heap
        if len(heap) > 2 * len(self._live) + 64:  # stale entries of aborted requests pile up
            self._heap = heap = [e for e in heap if self._alive(e)]
            heapq.heapify(heap)
        while True:
            while heap and not self._alive(heap[0]):
                heapq.heappop(heap)
            if not heap:
                return
            head = heap[0]
            yield head[3]
            if self._alive(head):  # passed over, not admitted: walk on, leaving it queued
                for i in heap_order(heap, (1, 2)):
                    if self._alive(heap[i]):
                        yield heap[i][3]
                return
