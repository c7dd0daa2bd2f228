"""BlockPool: vLLM V1's single free queue and prefix cache, in blocks."""

from __future__ import annotations

import pytest

from augserve.engine.kv import BlockPool


def test_freed_longest_ago_is_reused_first_even_if_cached() -> None:
    # vLLM V1 keeps one free queue: A's cached prefix, freed before B's uncached blocks, is
    # evicted first (a pool that spent uncached blocks first would keep A's prefix longer)
    p = BlockPool(5)
    p.allocate(5)
    p.release("A", 3, full_blocks=3)
    p.release("B", 2, full_blocks=0)
    p.allocate(2)
    assert p.cached("A") == 1  # its tail blocks went first; the first block survives
    p.check()


def test_partial_block_goes_ahead_of_the_prefix_and_hits_leave_the_queue() -> None:
    p = BlockPool(4)
    p.allocate(4)
    p.release("A", 4, full_blocks=3)  # 3 full blocks + a partial one
    p.allocate(1)  # takes the partial block (queued first), not the prefix
    assert p.cached("A") == 3 and p.free == 3
    p.touch("A", 3)
    assert p.free == 0 and p.cached("A") == 0
    p.check()
    with pytest.raises(RuntimeError):
        p.allocate(1)


def test_no_caching_keeps_nothing_and_superseded_prefixes_are_dropped() -> None:
    p = BlockPool(4, prefix_caching=False)
    p.allocate(3)
    p.release("A", 3, full_blocks=3)
    assert p.cached("A") == 0
    q = BlockPool(6)
    q.allocate(6)
    q.release("A", 2, full_blocks=2)
    q.allocate(2)
    q.release("A", 3, full_blocks=3)  # a newer copy replaces the old entry
    assert q.cached("A") == 3
    q.check()
