"""Paged KV block pool with vLLM-V1-style prefix caching, counted in blocks.

Like vLLM V1's ``FreeKVCacheBlockQueue``, free blocks form one queue: allocation takes blocks from
the front; a request's freed blocks are appended at the tail in reverse order (its uncached
partial block first, then its full blocks from last to first), so whatever was freed longest ago
is reused first and a request's tail blocks are evicted before its prefix. Freed full blocks keep
their content (the prefix cache) until they are reused; a request re-admitted while they are
still in the queue reuses its cached prefix instead of recomputing it. Blocks are counted in runs,
not named: the simulator needs how many are free and whose prefix survives.
"""

from __future__ import annotations

from collections import deque


class BlockPool:
    """GPU KV blocks: ``free`` of ``total``, queued in runs ``[owner | None, n]``."""

    __slots__ = ("total", "free", "caching", "_queue", "_owner")

    def __init__(self, total: int, prefix_caching: bool = True) -> None:
        if total < 1:
            raise ValueError(f"KV cache has {total} blocks; need at least 1")
        self.total = total
        self.free = total
        self.caching = prefix_caching
        # runs in allocation order (front = reused first); owner None = no cached content
        self._queue: deque[list] = deque([[None, total]])
        self._owner: dict[str, list] = {}  # owner -> its cached run in the queue

    @property
    def used(self) -> int:
        return self.total - self.free

    def cached(self, owner: str) -> int:
        """Leading full blocks of ``owner``'s context still in the pool."""
        e = self._owner.get(owner)
        return e[1] if e is not None else 0

    def allocate(self, n: int) -> None:
        """Take ``n`` blocks from the front of the free queue (evicting what they cached)."""
        if n > self.free:
            raise RuntimeError(f"allocate {n} blocks with {self.free} free")
        self.free -= n
        q = self._queue
        while n:
            e = q[0]
            k = e[1] if e[1] <= n else n
            e[1] -= k  # a cached run loses its tail blocks first
            n -= k
            if e[1] == 0:
                q.popleft()
                if e[0] is not None and self._owner.get(e[0]) is e:
                    del self._owner[e[0]]

    def release(self, owner: str, n: int, full_blocks: int) -> None:
        """Return ``n`` blocks of ``owner``; its first ``full_blocks`` stay cached (if caching)."""
        if n <= 0:
            return
        self.free += n
        keep = min(full_blocks, n) if self.caching else 0
        old = self._owner.pop(owner, None)
        if old is not None:  # an older copy of the same prefix is superseded
            old[0] = None
        if n - keep:
            self._queue.append([None, n - keep])
        if keep:
            e = [owner, keep]
            self._queue.append(e)
            self._owner[owner] = e

    def touch(self, owner: str, hit: int) -> None:
        """Reuse the first ``hit`` cached blocks of ``owner``: they leave the free queue."""
        if hit == 0:
            return
        e = self._owner.pop(owner, None)
        if e is None or hit > e[1]:
            raise RuntimeError(f"{owner}: hit {hit} > cached {self.cached(owner)}")
        self.free -= hit
        e[1] -= hit  # the prefix leaves; tail blocks left stay queued, uncached; an emptied
        e[0] = None  # run is dropped when allocation reaches it

    def check(self) -> None:
        """Raise if the queue does not add up (used by the engine's audit)."""
        if sum(e[1] for e in self._queue) != self.free:
            raise AssertionError(f"free queue holds {sum(e[1] for e in self._queue)} blocks, "
                                 f"free={self.free}")
        if not 0 <= self.free <= self.total:
            raise AssertionError(f"free={self.free} outside [0, {self.total}]")
