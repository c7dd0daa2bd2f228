"""What admitting a waiting request costs the simulator's KV pool (vLLM V1's
``get_computed_blocks`` + ``allocate_slots`` arithmetic, counted in blocks).

A request with no KV first takes its cached prefix from the pool (whole blocks, never the last
token: vLLM recomputes at least one; shared blocks in use by other requests cost no free
block); then it needs blocks for its next chunk. Units: tokens,
blocks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from augserve.engine.kv import BlockPool


class AdmitPlan(NamedTuple):
    """Admitting a request with a given token room."""

    hit_blocks: int  # cached prefix blocks it reuses
    hit_queued: int  # of which in the free queue (the others are in use by other requests)
    chunk_tokens: int  # tokens it computes in this step
    new_blocks: int  # free blocks it allocates besides the hits


def plan_admission(r: Any, room: int, pool: BlockPool, block_size: int) -> AdmitPlan:
    """The plan for runtime ``r`` (``ctx``, ``computed``, ``blocks``) with ``room`` tokens."""
    hit = queued = 0
    if r.computed == 0 and pool.caching:
        hit, queued = pool.lookup(r.keys, r.req.rid, (r.ctx - 1) // block_size)
    base = r.computed if r.computed else hit * block_size
    c = min(r.ctx - base, room)
    return AdmitPlan(hit, queued, c, -(-(base + c) // block_size) - r.blocks - hit)


def fits(plan: AdmitPlan, pool: BlockPool) -> bool:
    """Whether the plan's blocks are free now (its hits come out of the free count too)."""
    return plan.new_blocks <= pool.free - plan.hit_queued
