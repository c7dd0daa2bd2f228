"""A waiting queue ordered by value, with a starvation tier. O(log n) per event.

Requests are kept in a heap by ``key`` (lower first) and, in parallel, in a FIFO by the time
they entered the queue. A request whose age (``now - entered``, in the queue's clock: seconds or
engine steps) reaches ``starve_after`` is *promoted* to the starvation tier. On a *tier turn*
the tier's head (FIFO by default) is offered first and is never passed over (if it does not fit,
admission waits for memory); otherwise requests go by key. The policy decides when turns happen:
every step (strict: the whole tier goes first, as LAMPS and LTR do) or at most once per
``every`` clock units (AugServe: a reserved admission rate, so that under sustained overload the
tier does not turn the queue into FCFS of requests that have already missed their SLO).

**Starvation bound.** The tier is FIFO, so once request *i* is promoted, the tier requests
admitted before it all entered the queue before it; call their number ``P_i`` (at most the queue
length when *i* entered). With a turn at least every ``every`` clock units, *i* reaches the head
and is admitted within ``P_i + 1`` turns, so its wait is at most
``starve_after + (P_i + 1)·every + M_i``, where ``M_i`` is the time the tier head waits for free
KV. (Strict mode: ``every`` = one step.) An unbounded stream of later, shorter requests cannot
delay it: they are never ahead of it in the tier.

With ``tier_by_key`` (vLLM-LTR's rule) the tier is ordered by key instead: a promoted request
can then be passed by later-promoted ones with lower keys, without end under sustained overload,
so the bound above does not hold for it.

Traversal in order is lazy (best-first over the heap array), so yielding the first k candidates
costs O(k log k) and nothing is re-sorted per step.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

from augserve.contract import RequestView


def heap_order(heap: list, roots: tuple[int, ...] = (0,)) -> Iterator[int]:
    """Indices of ``heap``'s entries below ``roots`` in key order (best-first over the array,
    which is not changed: entries are compared on their first two fields)."""
    frontier = [(heap[j][0], heap[j][1], j) for j in roots if j < len(heap)]
    heapq.heapify(frontier)
    while frontier:
        i = heapq.heappop(frontier)[2]
        yield i
        for j in (2 * i + 1, 2 * i + 2):
            if j < len(heap):
                heapq.heappush(frontier, (heap[j][0], heap[j][1], j))


class ValueQueue:
    """Waiting requests by value with promotion after ``starve_after`` (None: never)."""

    __slots__ = ("starve_after", "tier_by_key", "_heap", "_fifo", "_live", "_live_heap", "_seq",
                 "_wasted", "_key", "_tier_heap", "_promoted")

    def __init__(self, starve_after: float | None = None, tier_by_key: bool = False) -> None:
        """``tier_by_key``: the tier is ordered by key, not FIFO (vLLM-LTR sorts its promoted
        requests by their score); the bound above then holds only for FIFO."""
        if starve_after is not None and starve_after < 0:
            raise ValueError(f"starve_after={starve_after} must be >= 0")
        self.starve_after = starve_after
        self.tier_by_key = bool(tier_by_key)
        self._key: dict[str, float] = {}  # rid -> current key (tier_by_key)
        self._tier_heap: list[tuple[float, int, RequestView]] = []  # promoted, by key
        self._promoted: set[str] = set()
        self._heap: list[tuple[float, int, RequestView]] = []
        self._fifo: deque[tuple[float, int, RequestView]] = deque()
        self._live: dict[str, int] = {}  # rid -> seq of its live FIFO entry
        self._live_heap: dict[str, int] = {}  # rid -> seq of its live heap entry
        self._seq = 0
        self._wasted = 0  # stale heap entries traversals have stepped over since a rebuild

    def __len__(self) -> int:
        return len(self._live)

    def push(self, view: RequestView, key: float, entered: float, tier: bool = True) -> None:
        """Add (or re-add) ``view`` with ``key``; ``entered`` on the queue's clock; ``tier``
        False: it is never promoted (a policy whose starvation rule spares some requests)."""
        self._seq += 1
        self._live[view.rid] = self._live_heap[view.rid] = self._seq
        heapq.heappush(self._heap, (key, self._seq, view))
        if self.tier_by_key:
            self._key[view.rid] = key
            self._promoted.discard(view.rid)
        if tier:
            self._fifo.append((entered, self._seq, view))

    def rekey(self, view: RequestView, key: float) -> None:
        """Change ``view``'s key; its place in the FIFO (its waiting time) stays."""
        if view.rid not in self._live:
            return
        self._seq += 1
        self._live_heap[view.rid] = self._seq
        heapq.heappush(self._heap, (key, self._seq, view))
        if self.tier_by_key:
            self._key[view.rid] = key
            if view.rid in self._promoted:
                heapq.heappush(self._tier_heap, (key, self._seq, view))

    def __contains__(self, rid: str) -> bool:
        return rid in self._live

    def remove(self, rid: str) -> None:
        self._live.pop(rid, None)
        self._live_heap.pop(rid, None)
        if self.tier_by_key:
            self._key.pop(rid, None)
            self._promoted.discard(rid)

    def _alive(self, seq: int, view: RequestView) -> bool:
        return self._live.get(view.rid) == seq

    def _alive_heap(self, seq: int, view: RequestView) -> bool:
        return self._live_heap.get(view.rid) == seq

    def _clean(self) -> None:
        heap, fifo = self._heap, self._fifo
        while heap and not self._alive_heap(heap[0][1], heap[0][2]):
            heapq.heappop(heap)
        while fifo and not self._alive(fifo[0][1], fifo[0][2]):
            fifo.popleft()
        # rebuild without stale entries when they pile up (memory), or once traversals have
        # stepped over as many of them as a rebuild costs (admitted and re-keyed requests
        # leave stale entries among the best keys, under newer arrivals): at most twice the
        # traversal work of a heap without stale entries
        if (len(heap) > 64 and len(heap) > 4 * len(self._live)) or self._wasted > len(heap) + 64:
            self._heap = [e for e in heap if self._alive_heap(e[1], e[2])]
            heapq.heapify(self._heap)
            self._fifo = deque(e for e in fifo if self._alive(e[1], e[2]))
            self._tier_heap = [e for e in self._tier_heap if self._in_tier(e)]
            heapq.heapify(self._tier_heap)
            self._wasted = 0

    def _in_tier(self, e: tuple[float, int, RequestView]) -> bool:
        return e[2].rid in self._promoted and self._alive_heap(e[1], e[2])

    def _promote(self, now: float) -> None:
        """Move requests that have waited ``starve_after`` from the FIFO to the keyed tier."""
        limit = now - self.starve_after
        fifo = self._fifo
        while fifo and fifo[0][0] <= limit:
            _, seq, view = fifo.popleft()
            if self._alive(seq, view):
                self._promoted.add(view.rid)
                heapq.heappush(self._tier_heap,
                               (self._key[view.rid], self._live_heap[view.rid], view))

    def _tier_by_key(self, max_promoted: int | None) -> Iterator[RequestView]:
        tier = self._tier_heap
        while tier and not self._in_tier(tier[0]):
            heapq.heappop(tier)
        n = 0
        for i in heap_order(tier):
            if max_promoted is not None and n >= max_promoted:
                return
            if self._in_tier(tier[i]):
                n += 1
                yield tier[i][2]

    def ordered(
        self, now: float, max_promoted: int | None = None
    ) -> Iterator[tuple[RequestView, bool]]:
        """(view, promoted) in admission order at ``now`` (lazy): up to ``max_promoted`` tier
        requests first (None: all of them), then by key."""
        self._clean()
        seen: set[str] = set()
        if self.tier_by_key and self.starve_after is not None:
            self._promote(now)
            if max_promoted != 0:
                for view in self._tier_by_key(max_promoted):
                    seen.add(view.rid)
                    yield view, True
        elif self.starve_after is not None and max_promoted != 0:
            limit = now - self.starve_after
            for entered, seq, view in self._fifo:  # removals only mark; the deque is stable
                if entered > limit or (max_promoted is not None and len(seen) >= max_promoted):
                    break
                if self._alive(seq, view):
                    seen.add(view.rid)
                    yield view, True
        heap = self._heap
        for i in heap_order(heap):
            _, seq, view = heap[i]
            if not self._alive_heap(seq, view):
                self._wasted += 1
            elif view.rid not in seen:
                yield view, False

    def promoted_head(self, now: float) -> RequestView | None:
        """The tier's head (FIFO, or the lowest key with ``tier_by_key``), if any request has
        waited ``starve_after``."""
        for view, promoted in self.ordered(now, max_promoted=1):
            return view if promoted else None
        return None

    def candidates(
        self, now: float, fits: Callable[[RequestView], bool], lookahead: int = 0,
        max_promoted: int | None = None,
    ) -> Iterator[RequestView]:
        """Admission order; up to ``lookahead`` unpromoted requests that do not fit are passed
        over in favour of later ones that do (a promoted request is never passed over)."""
        skipped = 0
        for view, promoted in self.ordered(now, max_promoted):
            if promoted or skipped >= lookahead or fits(view):
                yield view
            else:
                skipped += 1
