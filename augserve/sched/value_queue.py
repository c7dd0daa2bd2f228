"""A waiting queue ordered by value, with a FIFO starvation tier. O(log n) per event.

Requests are kept in a heap by ``key`` (lower first) and, in parallel, in a FIFO by the time they
entered the queue. A request whose age (``now - entered``, in the queue's clock: seconds or
engine steps) reaches ``starve_after`` is *promoted*: promoted requests come first, in FIFO
order, ahead of every unpromoted one.

**Starvation bound.** Promotion is FIFO and a promoted request is never skipped (the policy stops
at a promoted head that does not fit rather than passing it). So once request *i* is promoted, the
only requests admitted before it are requests promoted before it, i.e. requests that entered the
queue before *i* and were still waiting. Hence *i*'s wait is at most
``starve_after + D_i``, where ``D_i`` is the time FCFS would need to admit the requests that
entered before *i* and were still waiting at its promotion — never more than FCFS plus
``starve_after``. An unbounded stream of later, shorter requests cannot delay it further.

Traversal in order is lazy (best-first over the heap array), so yielding the first k candidates
costs O(k log k) and nothing is re-sorted per step.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

from augserve.request import RequestView


class ValueQueue:
    """Waiting requests by value with promotion after ``starve_after`` (None: never)."""

    __slots__ = ("starve_after", "_heap", "_fifo", "_live", "_seq")

    def __init__(self, starve_after: float | None = None) -> None:
        if starve_after is not None and starve_after < 0:
            raise ValueError(f"starve_after={starve_after} must be >= 0")
        self.starve_after = starve_after
        self._heap: list[tuple[float, int, RequestView]] = []
        self._fifo: deque[tuple[float, int, RequestView]] = deque()
        self._live: dict[str, int] = {}  # rid -> seq of its live entry
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def push(self, view: RequestView, key: float, entered: float) -> None:
        """Add (or re-add) ``view`` with ``key``; ``entered`` on the queue's clock."""
        self._seq += 1
        self._live[view.rid] = self._seq
        heapq.heappush(self._heap, (key, self._seq, view))
        self._fifo.append((entered, self._seq, view))

    def remove(self, rid: str) -> None:
        self._live.pop(rid, None)

    def _alive(self, seq: int, view: RequestView) -> bool:
        return self._live.get(view.rid) == seq

    def _clean(self) -> None:
        heap, fifo = self._heap, self._fifo
        while heap and not self._alive(heap[0][1], heap[0][2]):
            heapq.heappop(heap)
        while fifo and not self._alive(fifo[0][1], fifo[0][2]):
            fifo.popleft()
        # keep memory bounded when many stale entries pile up behind the heads
        if len(heap) > 64 and len(heap) > 4 * len(self._live):
            self._heap = [e for e in heap if self._alive(e[1], e[2])]
            heapq.heapify(self._heap)
            self._fifo = deque(e for e in fifo if self._alive(e[1], e[2]))

    def ordered(self, now: float) -> Iterator[tuple[RequestView, bool]]:
        """(view, promoted) in admission order at ``now`` (lazy)."""
        self._clean()
        seen: set[int] = set()
        if self.starve_after is not None:
            limit = now - self.starve_after
            for entered, seq, view in self._fifo:  # removals only mark; the deque is stable
                if entered > limit:
                    break
                if self._alive(seq, view):
                    seen.add(seq)
                    yield view, True
        heap = self._heap
        if not heap:
            return
        frontier = [(heap[0][0], heap[0][1], 0)]
        while frontier:
            _, _, i = heapq.heappop(frontier)
            key, seq, view = heap[i]
            if seq not in seen and self._alive(seq, view):
                yield view, False
            for j in (2 * i + 1, 2 * i + 2):
                if j < len(heap):
                    heapq.heappush(frontier, (heap[j][0], heap[j][1], j))

    def candidates(
        self, now: float, fits: Callable[[RequestView], bool], lookahead: int = 0
    ) -> Iterator[RequestView]:
        """Admission order; up to ``lookahead`` unpromoted requests that do not fit are passed
        over in favour of later ones that do (a promoted request is never passed over)."""
        skipped = 0
        for view, promoted in self.ordered(now):
            if promoted or skipped >= lookahead or fits(view):
                yield view
            else:
                skipped += 1
