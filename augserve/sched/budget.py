"""AugServe's dynamic per-step token budget.

Each step the budget starts from ``b_base`` (the static budget a vLLM deployment would use) and
moves within ``[b_min, b_max]`` (``b_max`` never above the engine's hard cap) on three signals:

1. **backlog** — when this step's work (waiting prefill tokens, what running requests still have
   to prefill, one token per running request) exceeds ``b_base``, the budget grows to clear it,
   up to ``b_max``: fewer steps until first tokens (cuts TTFT). A small backlog does not shrink
   it: under a TTFT-only SLO a smaller step buys nothing.
2. **memory** — growth needs room: only while the KV headroom (free blocks plus blocks held by
   requests paused in tools, which are reclaimable) is at least ``mem_low`` of the cache, and
   never beyond the free blocks. Under memory pressure the budget stays at ``b_base``: admission
   already stops at the first request that does not fit (vLLM's head-of-line rule), so cutting
   the budget further would only slow the prefills already admitted (measured: it lowered SLO
   attainment on InferCept's GPT-J setting).
3. **decode latency** — with a TPOT target, a step must not take longer than ``tpot_frac`` of
   it: step time ≈ ``floor + per_token·N`` (from the engine's cost model), so
   ``N ≤ (tpot_frac·TPOT − floor) / per_token``. If the last step already ran over that, the
   budget is cut in proportion (not under ``b_min``).
"""

from __future__ import annotations

from dataclasses import dataclass

from augserve.contract import EngineState


@dataclass
class DynamicBudget:
    """The rule above; tokens per step."""

    b_min: int = 256
    b_base: int = 2048
    b_max: int = 4096
    mem_low: float = 0.1  # fraction of the KV cache
    tpot_target_s: float | None = None
    tpot_frac: float = 0.8

    def __post_init__(self) -> None:
        if not 1 <= self.b_min <= self.b_base <= self.b_max:
            raise ValueError("need 1 <= b_min <= b_base <= b_max, got "
                             f"{self.b_min}, {self.b_base}, {self.b_max}")
        if not 0 <= self.mem_low < 1:
            raise ValueError(f"mem_low={self.mem_low} must be in [0, 1)")
        if self.tpot_target_s is not None and self.tpot_target_s <= 0:
            raise ValueError(f"tpot_target_s={self.tpot_target_s} must be > 0")

    def __call__(self, state: EngineState, backlog_tokens: int) -> int:
        info = state.info
        b_max = min(self.b_max, info.max_num_batched_tokens)
        b_base = min(self.b_base, b_max)
        b_min = min(self.b_min, b_base)
        need = max(backlog_tokens, 0) + state.running_prefill_tokens + state.num_running
        b = b_base
        headroom = state.free_blocks + state.paused_blocks
        if need > b_base and headroom >= self.mem_low * info.total_blocks:
            b = min(need, b_max, max(b_base, state.free_blocks * info.block_size))
        if self.tpot_target_s is not None and info.prefill_s_per_token > 0:
            cap = (self.tpot_frac * self.tpot_target_s - info.step_floor_s)
            n_lat = cap / info.prefill_s_per_token
            if state.last_step_s > self.tpot_frac * self.tpot_target_s > 0:
                n_lat *= self.tpot_frac * self.tpot_target_s / state.last_step_s
            b = min(b, int(n_lat))
        return int(max(b_min, min(b, b_max)))
