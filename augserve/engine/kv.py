"""Paged KV block pool with vLLM-V1-style prefix caching by content, counted in blocks.

Like vLLM V1's ``FreeKVCacheBlockQueue``, free blocks form one queue: allocation takes blocks from
the front; a request's freed blocks are appended at the tail in reverse order (its uncached
blocks first, then its full blocks from last to first), so whatever was freed longest ago is
reused first and a request's tail blocks are evicted before its prefix. Freed full blocks keep
their content (the prefix cache) until they are reused.

The simulator has no token ids, so content is named by keys (:mod:`augserve.prefix`):

* **shared blocks**, the full blocks of a request's shared prompt prefix (a dataset row's
  prompt, a tool-schema preamble), are named one by one, ``(level key, block index)``. As in V1
  a block is cached as soon as it is full of scheduled tokens, any request whose prefix has the
  same key hits it, whether it sits in the free queue or is in use by other requests (then it
  is shared: reference-counted, not allocated twice), and a hit walks the blocks from the first
  and stops at the first miss.
* a request's **own blocks** (the rest of its prompt, what it generated and what tools
  returned) hold content no other request has; they are counted in one run per request, which
  only that request (its continuation after a tool call, its recompute after a preemption) can
  hit, and only if every shared block before them hit too.

Units: blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence


class BlockPool:
    """GPU KV blocks: ``free`` of ``total``, queued in runs ``[key | None, n]``."""

    __slots__ = ("total", "free", "caching", "_queue", "_cached", "_ref")

    def __init__(self, total: int, prefix_caching: bool = True) -> None:
        if total < 1:
            raise ValueError(f"KV cache has {total} blocks; need at least 1")
        self.total = total
        self.free = total
        self.caching = prefix_caching
        # runs in allocation order (front = reused first); key None = no cached content; a
        # request's own run is keyed by its id (str), a shared block by its content key (tuple)
        self._queue: deque[list] = deque([[None, total]])
        self._cached: dict[Hashable, list] = {}  # key -> its cached run in the free queue
        self._ref: dict[Hashable, int] = {}  # shared block in use -> requests holding it

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def shared_in_use(self) -> int:
        """Shared blocks held by running or paused requests (each counted once)."""
        return len(self._ref)

    def refs(self) -> dict[Hashable, int]:
        """Shared blocks in use and how many requests hold each (the engine's audit)."""
        return dict(self._ref)

    def cached(self, owner: str) -> int:
        """Length of ``owner``'s own cached run (blocks right after its shared prefix)."""
        e = self._cached.get(owner)
        return e[1] if e is not None else 0

    def lookup(self, keys: Sequence[Hashable], owner: str, limit: int) -> tuple[int, int]:
        """Prefix hit of a request with shared block keys ``keys`` and id ``owner``, at most
        ``limit`` blocks: ``(hit blocks, of which in the free queue)``."""
        if not self.caching:
            return 0, 0
        n = queued = 0
        for key in keys[:limit]:
            if key in self._ref:
                n += 1
            elif key in self._cached:
                n += 1
                queued += 1
            else:
                return n, queued
        if n == len(keys):  # its own blocks follow an unbroken shared prefix
            own = min(self.cached(owner), limit - n)
            n += own
            queued += own
        return n, queued

    def take(self, keys: Sequence[Hashable], owner: str, hit: int) -> int:
        """Reuse the first ``hit`` blocks found by :meth:`lookup`; returns how many of them
        are shared blocks (now referenced by the caller too)."""
        ns = min(hit, len(keys))
        for key in keys[:ns]:
            c = self._ref.get(key)
            if c is None:
                self._unqueue(key, 1)
                self._ref[key] = 1
            else:
                self._ref[key] = c + 1
        if hit > ns:
            self._unqueue(owner, hit - ns)
        return ns

    def _unqueue(self, key: Hashable, n: int) -> None:
        e = self._cached.pop(key, None)
        if e is None or n > e[1]:
            raise RuntimeError(f"{key}: hit {n} > cached {0 if e is None else e[1]}")
        self.free -= n
        e[1] -= n  # the prefix leaves; tail blocks left stay queued, uncached; an emptied
        e[0] = None  # run is dropped when allocation reaches it

    def share(self, key: Hashable) -> bool:
        """Name a block the caller has just filled as the shared block ``key`` (V1 caches a
        block once it is full); False if that content is cached already (this copy stays the
        caller's own) or caching is off."""
        if not self.caching or key in self._ref or key in self._cached:
            return False
        self._ref[key] = 1
        return True

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
                if e[0] is not None and self._cached.get(e[0]) is e:
                    del self._cached[e[0]]

    def _queue_cached(self, key: Hashable, n: int) -> None:
        e = [key, n]
        self._queue.append(e)
        self._cached[key] = e

    def free_own(self, n: int) -> None:
        """Return ``n`` of a request's own blocks with nothing cached (a swap-out)."""
        if n > 0:
            self.free += n
            self._queue.append([None, n])

    def unref(self, keys: Sequence[Hashable]) -> None:
        """Drop one reference to each shared block (in the order given); a block nobody holds
        goes to the free queue, cached."""
        for key in keys:
            c = self._ref[key] - 1
            if c:
                self._ref[key] = c
            else:
                del self._ref[key]
                self.free += 1
                self._queue_cached(key, 1)

    def release(self, owner: str, keys: Sequence[Hashable], n: int, shared: int,
                full: int) -> None:
        """Return all ``n`` blocks of ``owner``: its first ``shared`` are references to
        ``keys[:shared]``; the others are its own, and of its first ``full`` blocks (full and
        computed) those are cached: a shared-prefix one under its key (unless that content is
        cached already), the rest as ``owner``'s run."""
        if n <= 0:
            return
        old = self._cached.pop(owner, None)
        if old is not None:  # an older copy of the same content is superseded
            old[0] = None
        own = n - shared
        if not self.caching:
            full = 0
        full = min(full, n)
        k = len(keys)
        run = max(0, full - k)
        named = [keys[i] for i in range(shared, min(full, k))
                 if keys[i] not in self._ref and keys[i] not in self._cached]
        self.free_own(own - run - len(named))
        self.free += run + len(named)
        if run:
            self._queue_cached(owner, run)
        for key in reversed(named):
            self._queue_cached(key, 1)
        self.unref(keys[shared - 1::-1] if shared else ())

    def check(self) -> None:
        """Raise if the queue does not add up (used by the engine's audit)."""
        if sum(e[1] for e in self._queue) != self.free:
            raise AssertionError(f"free queue holds {sum(e[1] for e in self._queue)} blocks, "
                                 f"free={self.free}")
        if not 0 <= self.free <= self.total:
            raise AssertionError(f"free={self.free} outside [0, {self.total}]")
        both = self._ref.keys() & self._cached.keys()
        if both:
            raise AssertionError(f"shared blocks both in use and queued: {sorted(both)[:3]}")
