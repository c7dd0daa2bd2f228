"""The simulator's lazy decode set: requests decoding one token a step, advanced in O(events).

A decoding request's tokens are not updated one by one: it records the step it joined at, and
its tokens are derived from the step counter until it leaves (segment end, preemption, end of the
run). The set keeps the sums a step needs (requests, Σ context) and, per step residue modulo the
block size, how many of its requests need a new KV block at that step.

:func:`plan_stretch` finds how many decode-only steps can run at once with no event (no
arrival, tool return, segment end or block shortage) and their times, from one vectorized cost
evaluation. Units: steps, tokens, blocks, seconds.
"""

from __future__ import annotations

import heapq
from typing import Any, NamedTuple

import numpy as np

from augserve.engine.cost import CostModel

STRETCH_CHUNK = 1024  # steps evaluated at once when skipping a decode-only stretch


class DecodeSet:
    """Requests decoding lazily (see the module docstring). Members are the simulator's
    runtimes; the set writes their ``in_decode``, ``dec_*`` and ``epoch`` fields."""

    __slots__ = ("bs", "n", "ctx", "bucket", "seg_heap")

    def __init__(self, block_size: int) -> None:
        self.bs = block_size
        self.n = 0  # requests decoding
        self.ctx = 0  # Σ (computed + 1) over them at the next step (attention context)
        self.bucket = [0] * block_size  # members needing a new block at step s: s % bs
        self.seg_heap: list = []  # (step at which the segment ends, seq, runtime, epoch)

    def join(self, r: Any, step: int) -> None:
        """``r`` decodes from step ``step`` on."""
        r.in_decode = True
        r.dec_step0, r.dec_computed0, r.dec_gen0 = step, r.computed, r.seg_gen
        r.epoch += 1
        self.n += 1
        self.ctx += r.computed + 1
        self.bucket[(step - r.computed) % self.bs] += 1
        seg_len = r.req.segments[r.seg_idx].gen_tokens
        heapq.heappush(self.seg_heap, (step + seg_len - r.seg_gen, r.seq, r, r.epoch))

    def leave(self, r: Any, step: int, block_allocated: bool) -> None:
        """Materialize ``r``'s tokens up to ``step`` and take it out. ``block_allocated``: this
        step's decode blocks were allocated already (``r`` gives back one it will not fill)."""
        steps = step - r.dec_step0
        residue = (r.dec_step0 - r.dec_computed0) % self.bs
        r.in_decode = False
        r.epoch += 1
        self.n -= 1
        self.ctx -= r.dec_computed0 + steps + 1
        self.bucket[residue] -= 1
        if steps:
            r.computed = r.dec_computed0 + steps
            r.ctx += steps
            r.gen += steps
            r.seg_gen = r.dec_gen0 + steps
            r.blocks = -(-r.computed // self.bs)
            r.chunks.append((r.dec_step0, step))
        if block_allocated and residue == step % self.bs:
            r.blocks += 1

    def blocks_needed(self, step: int) -> int:
        """New blocks the members need for their tokens of step ``step``."""
        return self.bucket[step % self.bs]

    def pop_ended(self, step: int) -> Any | None:
        """A member whose segment ends by ``step`` (None when there is none)."""
        heap = self.seg_heap
        while heap and heap[0][0] <= step:
            _, _, r, ep = heapq.heappop(heap)
            if ep == r.epoch and r.in_decode:
                return r
        return None

    def steps_to_first_end(self, step: int) -> int | None:
        """Steps from ``step`` until the first member's segment ends; None if no member."""
        heap = self.seg_heap
        while heap and (heap[0][3] != heap[0][2].epoch or not heap[0][2].in_decode):
            heapq.heappop(heap)
        return heap[0][0] - step if heap else None


class Stretch(NamedTuple):
    """``steps`` decode-only steps that can run at once."""

    steps: int
    blocks: int  # new KV blocks they take
    ends_s: np.ndarray  # end time of each step (s)
    dts: np.ndarray  # duration of each step (s)


def plan_stretch(dec: DecodeSet, step: int, now_s: float, free_blocks: int, t_limit_s: float,
                 cost: CostModel) -> Stretch | None:
    """The longest run of decode-only steps from ``step`` that ends before the first segment
    end, fits ``free_blocks``, and starts every step before ``t_limit_s`` (the next event or
    the time limit); None if under 2 steps."""
    m_seg = dec.steps_to_first_end(step)
    if m_seg is None or m_seg < 2:
        return None
    m = min(m_seg, STRETCH_CHUNK)
    ks = np.arange(step, step + m)
    # blocks: stop before the first step whose new blocks do not fit
    need = np.asarray(dec.bucket)[ks % dec.bs].cumsum()
    m = min(m, int(np.searchsorted(need, free_blocks, side="right")))
    if m < 2:
        return None
    nd = dec.n
    ctx = dec.ctx + nd * np.arange(m, dtype=np.int64)
    dts = cost.step_times(np.full(m, nd, dtype=np.int64), ctx, np.zeros(m))
    t = np.cumsum(np.concatenate(([now_s], dts)))
    # step j (j >= 1) starts at t[j]; it may run only if no event is due by then
    m = min(m, 1 + int(np.searchsorted(t[1:m], t_limit_s, side="left")))
    if m < 2:
        return None
    return Stretch(m, int(need[m - 1]), t[1:m + 1], dts[:m])
