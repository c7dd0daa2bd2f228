"""BlockPool: vLLM V1's single free queue and prefix cache by content, in blocks."""

from __future__ import annotations

import pytest

from augserve.engine.kv import BlockPool

NO_KEYS: tuple = ()
K = (("row:x", 0), ("row:x", 1), ("row:x", 2))  # a shared 3-block prefix


def test_freed_longest_ago_is_reused_first_even_if_cached() -> None:
    # vLLM V1 keeps one free queue: A's cached prefix, freed before B's uncached blocks, is
    # evicted first (a pool that spent uncached blocks first would keep A's prefix longer)
    p = BlockPool(5)
    p.allocate(5)
    p.release("A", NO_KEYS, 3, shared=0, full=3)
    p.release("B", NO_KEYS, 2, shared=0, full=0)
    p.allocate(2)
    assert p.cached("A") == 1  # its tail blocks went first; the first block survives
    p.check()


def test_partial_block_goes_ahead_of_the_prefix_and_hits_leave_the_queue() -> None:
    p = BlockPool(4)
    p.allocate(4)
    p.release("A", NO_KEYS, 4, shared=0, full=3)  # 3 full blocks + a partial one
    p.allocate(1)  # takes the partial block (queued first), not the prefix
    assert p.cached("A") == 3 and p.free == 3
    assert p.lookup(NO_KEYS, "A", limit=10) == (3, 3)
    assert p.take(NO_KEYS, "A", 3) == 0
    assert p.free == 0 and p.cached("A") == 0
    p.check()
    with pytest.raises(RuntimeError):
        p.allocate(1)


def test_no_caching_keeps_nothing_and_superseded_prefixes_are_dropped() -> None:
    p = BlockPool(4, prefix_caching=False)
    p.allocate(3)
    assert not p.share(K[0])
    p.release("A", NO_KEYS, 3, shared=0, full=3)
    assert p.cached("A") == 0 and p.lookup(NO_KEYS, "A", 10) == (0, 0)
    q = BlockPool(6)
    q.allocate(6)
    q.release("A", NO_KEYS, 2, shared=0, full=2)
    q.allocate(2)
    q.release("A", NO_KEYS, 3, shared=0, full=3)  # a newer copy replaces the old entry
    assert q.cached("A") == 3
    q.check()


def test_shared_blocks_are_held_once_and_cached_when_the_last_holder_leaves() -> None:
    p = BlockPool(10)
    p.allocate(4)  # A: 3 prompt blocks with shared content + 1 of its own
    assert all(p.share(k) for k in K)
    assert not p.share(K[0])  # that content is named already: a second copy stays private
    # B has the same prompt: it hits A's blocks in use, which take no free block
    assert p.lookup(K, "B", limit=3) == (3, 0)
    assert p.take(K, "B", 3) == 3
    assert p.free == 6 and p.shared_in_use == 3
    p.release("A", K, 4, shared=3, full=4)  # its own block is freed; the shared ones stay
    assert p.free == 7 and p.shared_in_use == 3 and p.cached("A") == 1
    p.release("B", K, 3, shared=3, full=3)
    assert p.free == 10 and p.shared_in_use == 0
    # C (same prompt) takes them from the free queue; A's own run follows only for A
    assert p.lookup(K, "C", limit=5) == (3, 3)
    assert p.lookup(K, "A", limit=5) == (4, 4)
    p.check()


def test_a_hit_stops_at_the_first_missing_block_and_own_blocks_need_the_whole_prefix() -> None:
    p = BlockPool(8)
    p.allocate(5)
    assert all(p.share(k) for k in K)
    p.release("A", K, 5, shared=3, full=5)  # queued: 3 never used, A's 2 own, K[2], K[1], K[0]
    p.allocate(6)  # the 3 unused, A's own run and K[2]
    assert p.cached("A") == 0
    assert p.lookup(K, "A", limit=5) == (2, 2)
    p.allocate(1)  # K[1] goes: the chain breaks after block 0
    assert p.lookup(K, "B", limit=5) == (1, 1)
    p.check()


def test_private_copies_of_shared_content_are_cached_by_content_on_release() -> None:
    # A computed the shared prompt while its content was cached elsewhere under no key (e.g.
    # after a swap-in): on release its full blocks become the named cache entries
    p = BlockPool(6)
    p.allocate(4)
    p.release("A", K, 4, shared=0, full=4)
    assert p.lookup(K, "Z", limit=5) == (3, 3)
    assert p.cached("A") == 1
    p.check()
