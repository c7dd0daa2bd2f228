"""Paged KV block pool with vLLM-V1-style prefix caching, counted in blocks.

Freed blocks stay in the free pool with their content until they are reused (LRU eviction, the
tail blocks of a request first, as vLLM V1 frees them in reverse order). A request re-admitted
while its blocks are still in the pool reuses its cached prefix instead of recomputing it.
Blocks are counted, not named: the simulator needs how many are free and whose prefix survives.
"""

from __future__ import annotations

from collections import deque


class BlockPool:
    """GPU KV blocks: ``free`` of ``total``; of the free ones, ``clean`` hold no cached prefix."""

    __slots__ = ("total", "free", "clean", "caching", "_lru", "_owner")

    def __init__(self, total: int, prefix_caching: bool = True) -> None:
        if total < 1:
            raise ValueError(f"KV cache has {total} blocks; need at least 1")
        self.total = total
        self.free = total
        self.clean = total
        self.caching = prefix_caching
        # entries [owner, n_cached_blocks] in eviction order (front = evicted first)
        self._lru: deque[list] = deque()
        self._owner: dict[str, list] = {}

    @property
    def used(self) -> int:
        return self.total - self.free

    def cached(self, owner: str) -> int:
        """Leading full blocks of ``owner``'s context still in the pool."""
        e = self._owner.get(owner)
        return e[1] if e is not None else 0

    def allocate(self, n: int) -> None:
        """Take ``n`` free blocks, evicting cached prefixes (LRU) once clean blocks run out."""
        if n > self.free:
            raise RuntimeError(f"allocate {n} blocks with {self.free} free")
        self.free -= n
        take = n if n <= self.clean else self.clean
        self.clean -= take
        rest = n - take
        lru = self._lru
        while rest:
            e = lru[0]
            k = e[1] if e[1] <= rest else rest
            e[1] -= k
            rest -= k
            if e[1] == 0:
                lru.popleft()
                if self._owner.get(e[0]) is e:
                    del self._owner[e[0]]

    def release(self, owner: str, n: int, full_blocks: int) -> None:
        """Return ``n`` blocks of ``owner``; its first ``full_blocks`` stay cached (if caching)."""
        self.free += n
        keep = min(full_blocks, n) if self.caching else 0
        self.clean += n - keep
        old = self._owner.pop(owner, None)
        if old is not None:  # an older copy of the same prefix is superseded
            self.clean += old[1]
            old[1] = 0
        if keep:
            e = [owner, keep]
            self._lru.append(e)
            self._owner[owner] = e
        self._compact()

    def touch(self, owner: str, hit: int) -> None:
        """Reuse the first ``hit`` cached blocks of ``owner``: they leave the free pool."""
        e = self._owner.pop(owner, None)
        if e is None:
            if hit:
                raise RuntimeError(f"no cached prefix for {owner}")
            return
        if hit > e[1]:
            raise RuntimeError(f"{owner}: hit {hit} > cached {e[1]}")
        self.free -= hit
        self.clean += e[1] - hit
        e[1] = 0
        self._compact()

    def _compact(self) -> None:
        lru = self._lru
        while lru and lru[0][1] == 0:
            lru.popleft()
