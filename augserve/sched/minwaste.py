"""InferCept's min-waste rule for choosing a KV mode at a tool call.

Waste is memory × time that the GPU holds without doing useful work (InferCept, §4). For a
request with context ``C`` tokens intercepted for ``T_tool`` seconds, with ``M`` bytes of KV per
token (it cancels out, so waste is reported in token·seconds):

* preserve: the blocks sit idle for the whole call::

      W_preserve = T_tool · C · M

* discard: on resume the context is recomputed; while those ``C`` tokens are forwarded
  (``T_fwd(C)``), the memory of the request and of the rest of the running batch ``C_other``
  serves the recompute instead of new tokens::

      W_discard = T_fwd(C) · (C + C_other) · M

* swap: the copy out and the copy back each take ``T_swap(C)`` and stall the batch's memory
  ``C_batch`` (budgeted swap overlaps most of it, so this is an upper bound)::

      W_swap = 2 · T_swap(C) · C_batch · M

The mode with the least waste is chosen. ``T_fwd(C) = C · t_token`` with the engine's marginal
forward time per token, and ``T_swap(C) = C · kv_bytes_per_token / swap_bytes_per_s``.
"""

from __future__ import annotations

from typing import NamedTuple

from augserve.contract import EngineState, KVMode


class Waste(NamedTuple):
    """Token·seconds of idle KV for each mode (a tuple: built at every tool call and every
    valuation of a request expected to call one)."""

    preserve: float
    discard: float
    swap: float

    def best(self, allow_swap: bool = True) -> KVMode:
        """The mode of least waste; ties go to preserve, then discard, then swap."""
        p, d, s = self
        if p != p or d != d or s != s:  # NaN: the tuple order the rule was written with
            options = [(p, 0, KVMode.PRESERVE), (d, 1, KVMode.DISCARD)]
            return min(options + [(s, 2, KVMode.SWAP)] if allow_swap else options)[2]
        if allow_swap and s < p and s < d:
            return KVMode.SWAP
        return KVMode.DISCARD if d < p else KVMode.PRESERVE


def min_waste(context_tokens: int, tool_s: float, state: EngineState) -> Waste:
    """Waste of each mode for a call of ``tool_s`` seconds on ``context_tokens`` of context."""
    info = state.info
    c = float(context_tokens)
    used = info.total_blocks - state.free_blocks - state.paused_blocks
    c_other = max(0.0, used * info.block_size - c)
    c_batch = c_other + c
    t_fwd = c * info.prefill_s_per_token
    bw = info.swap_bytes_per_s
    t_swap = c * info.kv_bytes_per_token / bw if bw > 0 else float("inf")
    return Waste(
        preserve=tool_s * c,
        discard=t_fwd * (c + c_other),
        swap=2.0 * t_swap * c_batch,
    )
