"""The simulator's KV during tool calls: the KV-mode state machine and the swap traffic.

At a tool call (:meth:`ToolKV.park`) the policy's :class:`~augserve.contract.KVMode` decides:
``preserve`` keeps the blocks (its own counted as paused, reclaimable); ``swap`` copies its own
blocks to CPU at up to a per-step block budget (from the PCIe bandwidth and the step's
duration), freeing them as they go, while its references to shared prefix blocks stay (other
requests may hold them), or falls back to ``discard`` when the CPU swap space is full; ``vllm``
and ``discard`` give them back to the pool (where the prefix cache may keep them). When the
tool returns (:meth:`ToolKV.unpark`) a preserved request, or a swapped one of which nothing
left the GPU, rejoins the running set; any other waits for re-admission, which copies its CPU
blocks back (:meth:`ToolKV.swap_in`) before it computes.

A ``preserve`` decision with a time-to-live (:class:`~augserve.contract.KVDecision`) is a *pin*
(Continuum's TTL pinning): it keeps the blocks at most ``ttl_s`` into the call: if the tool is
still running then (:meth:`ToolKV.expire_due`), the blocks are freed as ``discard`` frees them
and the request resumes as a discarded one. A pin is also reclaimable: under memory pressure
the engine frees pins before it preempts a running request, the one with the latest pin end
first (:meth:`ToolKV.reclaim_pin`; Continuum, ``pop_running_request_based_on_last_step``). A
``preserve`` without a TTL (InferCept's) is held until the tool returns. Units: blocks, bytes,
seconds.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from augserve.contract import KVMode
from augserve.engine.kv import BlockPool


class ToolKV:
    """KV of the requests inside tool calls, and of those copying KV to or from CPU."""

    def __init__(self, pool: BlockPool, block_size: int, kv_bytes_per_token: int,
                 swap_bytes_per_s: float, swap_space_bytes: float, step_floor_s: float,
                 stats: dict[str, Any]) -> None:
        self.pool = pool
        self.bs = block_size
        self.block_bytes = kv_bytes_per_token * block_size
        self.swap_bytes_per_s = swap_bytes_per_s
        self.swap_space_bytes = swap_space_bytes
        self.step_floor_s = step_floor_s
        self.stats = stats
        self.paused: set = set()  # requests inside a tool call
        self.paused_blocks = 0  # GPU blocks they hold
        self.swapping_in: dict[Any, None] = {}  # re-admitted, copying back (in order)
        self.swapping_out: dict[Any, None] = {}
        self.swap_used_bytes = 0.0  # CPU swap space taken (copied out or being copied)
        self.expiry: list[tuple[float, int, Any]] = []  # (TTL end s, seq, runtime)
        self.pins: dict[Any, float] = {}  # paused with a TTL pin -> its end (s)

    def budget(self, last_step_s: float) -> int:
        """Blocks that can move in each direction in the next step."""
        bw = self.swap_bytes_per_s
        if math.isinf(bw):
            return 1 << 30
        dt = last_step_s if last_step_s > 0 else self.step_floor_s
        return max(1, int(bw * dt / self.block_bytes))

    def park(self, r: Any, mode: KVMode, ttl_s: float | None = None, now_s: float = 0.0,
             call_s: float = math.inf) -> None:
        """``r`` paused at ``now_s`` for a tool call of ``call_s`` seconds; the policy asked for
        ``mode`` (``preserve``: for at most ``ttl_s`` if given)."""
        own = r.blocks - r.shared  # its references to shared prefix blocks stay on the GPU
        if mode is KVMode.SWAP and (self.swap_used_bytes + own * self.block_bytes
                                    > self.swap_space_bytes):
            mode = KVMode.DISCARD  # CPU swap space is full
        r.mode = mode
        r.rec.kv_modes.append(mode.value)
        self.paused.add(r)
        if mode is KVMode.PRESERVE:
            self.paused_blocks += own
            if ttl_s is not None:
                self.pins[r] = now_s + ttl_s
                if ttl_s < call_s:  # else the tool returns first
                    heapq.heappush(self.expiry, (now_s + ttl_s, r.seq, r))
        elif mode is KVMode.SWAP:
            self.paused_blocks += own
            r.swap_out_left = own
            self.swap_used_bytes += own * self.block_bytes
            self.swapping_out[r] = None
        else:  # vllm, discard: the KV goes back to the pool (the prefix cache may keep it)
            self._free(r)

    def release(self, r: Any, full: int) -> None:
        """Give back all of ``r``'s GPU blocks; its first ``full`` stay cached (engine.kv)."""
        self.pool.release(r.req.rid, r.keys, r.blocks, r.shared, full)
        r.blocks = 0
        r.shared = 0

    def _free(self, r: Any) -> None:
        self.release(r, r.computed // self.bs)
        r.prev_computed = max(r.prev_computed, r.computed)
        r.computed = 0

    def next_expiry_s(self) -> float | None:
        """When the next pin's TTL ends (s); None if none will before its tool returns."""
        ex = self.expiry
        while ex and self.pins.get(ex[0][2]) != ex[0][0]:  # reclaimed before its TTL
            heapq.heappop(ex)
        return ex[0][0] if ex else None

    def _unpin(self, r: Any) -> None:
        del self.pins[r]
        self.paused_blocks -= r.blocks - r.shared
        self._free(r)
        r.mode = KVMode.DISCARD

    def expire_due(self, now_s: float) -> list[Any]:
        """Free the pinned KV whose time-to-live ended by ``now_s`` (a TTL shorter than its
        call only, so the request is still in its tool call); returns those requests."""
        done = []
        while (t := self.next_expiry_s()) is not None and t <= now_s:
            _, _, r = heapq.heappop(self.expiry)
            self._unpin(r)
            r.rec.kv_expired += 1
            done.append(r)
        return done

    def reclaim_pin(self) -> Any | None:
        """Memory pressure: free the pin with the latest end (ties: the latest call); returns
        its request, or None if nothing is pinned."""
        if not self.pins:
            return None
        r = max(self.pins, key=lambda q: (self.pins[q], q.seq))
        self._unpin(r)
        r.rec.kv_reclaimed += 1
        self.stats["pins_reclaimed"] += 1
        return r

    def unpark(self, r: Any) -> bool:
        """``r``'s tool returned. True: it runs on at once (its KV is on the GPU); False: it
        waits for re-admission (the CPU part comes back then; the rest stays allocated)."""
        self.paused.discard(r)
        self.pins.pop(r, None)  # the next turn takes the pinned KV (a prefix hit in vLLM)
        if r.mode is KVMode.PRESERVE:
            self.paused_blocks -= r.blocks - r.shared
            return True
        if r.mode is KVMode.SWAP:
            if r in self.swapping_out:  # the call ended before the copy out did
                del self.swapping_out[r]
                self.swap_used_bytes -= r.swap_out_left * self.block_bytes
                r.swap_out_left = 0
            self.paused_blocks -= r.blocks - r.shared  # blocks not copied out stay on the GPU
            if r.cpu_blocks == 0:  # nothing left the GPU: continue as if preserved
                return True
        return False

    def start_swap_in(self, r: Any) -> bool:
        """``r`` was admitted: True if its CPU blocks must come back before it computes."""
        if not r.cpu_blocks:
            return False
        r.swap_in_left = r.cpu_blocks
        self.swapping_in[r] = None
        return True

    def abandon_swap_in(self, r: Any) -> bool:
        """``r`` is preempted: drop its copy back and its CPU copy. True if it was copying."""
        if r not in self.swapping_in:
            return False
        del self.swapping_in[r]
        self.swap_used_bytes -= r.cpu_blocks * self.block_bytes
        r.cpu_blocks = 0
        r.swap_in_left = 0
        return True

    def drop_partial(self, r: Any) -> None:
        """Free a waiting ``r``'s GPU blocks (none stay cached: which tokens they hold is not
        tracked) and its CPU copy."""
        self.release(r, 0)
        self.swap_used_bytes -= r.cpu_blocks * self.block_bytes
        r.cpu_blocks = 0

    def transfers_pending(self) -> bool:
        return bool(self.swapping_in or self.swapping_out)

    def copy_s(self, blocks: int) -> float:
        """Seconds to move ``blocks`` over PCIe in one direction."""
        bw = self.swap_bytes_per_s
        return 0.0 if math.isinf(bw) else blocks * self.block_bytes / bw

    def swap_in(self, budget: int) -> int:
        """Copy up to ``budget`` blocks back to the GPU, in admission order; returns how many."""
        moved = 0
        for r in list(self.swapping_in):
            if budget <= 0:
                break
            x = min(budget, r.swap_in_left)
            r.swap_in_left -= x
            r.cpu_blocks -= x
            self.swap_used_bytes -= x * self.block_bytes
            budget -= x
            moved += x
            self.stats["swap_in_blocks"] += x
            if not r.swap_in_left:
                del self.swapping_in[r]
        return moved

    def swap_out(self, budget: int) -> int:
        """Copy up to ``budget`` blocks to CPU, freeing them on the GPU, in call order; returns
        how many."""
        moved = 0
        for r in list(self.swapping_out):
            if budget <= 0:
                break
            x = min(budget, r.swap_out_left)
            r.swap_out_left -= x
            self.pool.free_own(x)
            r.blocks -= x
            r.cpu_blocks += x
            self.paused_blocks -= x
            budget -= x
            moved += x
            self.stats["swap_out_blocks"] += x
            if not r.swap_out_left:
                del self.swapping_out[r]
        return moved
