"""Observations for learned Stage II: top-K candidates ``[K, F]`` + mask ``[K]`` + engine ``[G]``.

One builder serves the gymnasium env (training) and :class:`rl.policy.RLPolicy` (serving), so
the two cannot drift. Candidates are the first K requests in AugServe's order (promoted ones, then
by Stage I/II value), which keeps the env cheap and the ranking problem small. All features are
float32 and roughly unit-scaled (log1p of token counts and seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augserve.request import EngineState, RequestView

#: per-candidate features, in column order
ITEM_FEATURES: tuple[str, ...] = (
    "value",  # AugServe Stage I/II value (iterations), log1p
    "pred_out",  # predicted remaining output tokens, log1p
    "pred_calls",  # predicted remaining tool calls
    "pred_tool_s",  # predicted duration of a call (s), log1p
    "generated",  # tokens generated so far, log1p
    "waited_s",  # time in the waiting queue (s), log1p
    "prompt",  # prompt tokens, log1p
    "context",  # context tokens, log1p
    "uncomputed",  # context tokens to (re)compute, log1p
    "need_over_free",  # KV blocks its prefill needs / free blocks, clipped to [0, 4]
    "resumed",  # 1 if it comes back from a tool call
    "preempted",  # 1 if it waits after a preemption
    "promoted",  # 1 if it is in the starvation tier
    "value_rank",  # its position in AugServe's order / K
)

#: engine features, in order
ENGINE_FEATURES: tuple[str, ...] = (
    "free_frac",  # free KV blocks / total
    "paused_frac",  # blocks held by paused requests / total
    "running_frac",  # running / max_num_seqs
    "waiting",  # waiting requests, log1p
    "overflow",  # waiting requests beyond the K candidates, log1p
    "step_ratio",  # last step time / cheapest step, clipped to [0, 20]
    "backlog",  # prefill tokens waiting, log1p
    "arrival_rate",  # arrivals per second (EWMA), log1p
    "budget_frac",  # previous step's budget / largest budget bin
)


@dataclass(frozen=True)
class ObsSpec:
    """Shapes of the observation and the budget bins of the action."""

    k: int = 64
    budget_bins: tuple[int, ...] = (256, 512, 1024, 2048, 4096)

    @property
    def f(self) -> int:
        return len(ITEM_FEATURES)

    @property
    def g(self) -> int:
        return len(ENGINE_FEATURES)


@dataclass(slots=True)
class Candidate:
    """A request offered to the ranking, with what the policy predicted for it."""

    view: RequestView
    promoted: bool
    value: float
    pred_out: float
    pred_calls: float
    pred_tool_s: float


def build_observation(
    spec: ObsSpec,
    cands: Sequence[Candidate],
    state: EngineState,
    n_waiting: int,
    backlog_tokens: int,
    arrival_rate: float,
    last_budget: int,
) -> dict[str, np.ndarray]:
    """The observation dict for ``cands`` (at most ``spec.k``; the rest is masked)."""
    k = spec.k
    items = np.zeros((k, spec.f), dtype=np.float32)
    mask = np.zeros(k, dtype=np.int8)
    info = state.info
    free = max(state.free_blocks, 1)
    bs = info.block_size
    for i, c in enumerate(cands[:k]):
        v = c.view
        ctx = v.context_tokens
        unc = max(ctx - v.computed_tokens, 0)
        items[i] = (
            np.log1p(max(c.value, 0.0)),
            np.log1p(max(c.pred_out, 0.0)),
            max(c.pred_calls, 0.0),
            np.log1p(max(c.pred_tool_s, 0.0)),
            np.log1p(v.generated_tokens),
            np.log1p(max(state.now_s - v.wait_since_s, 0.0)),
            np.log1p(v.prompt_tokens),
            np.log1p(ctx),
            np.log1p(unc),
            min(-(-unc // bs) / free, 4.0),
            float(v.calls_done > 0),
            float(v.preempted),
            float(c.promoted),
            i / k,
        )
        mask[i] = 1
    total = max(info.total_blocks, 1)
    engine = np.array((
        state.free_blocks / total,
        state.paused_blocks / total,
        state.num_running / max(info.max_num_seqs, 1),
        np.log1p(n_waiting),
        np.log1p(max(n_waiting - k, 0)),
        min(state.last_step_s / info.step_floor_s, 20.0) if info.step_floor_s else 0.0,
        np.log1p(max(backlog_tokens, 0)),
        np.log1p(max(arrival_rate, 0.0)),
        last_budget / max(spec.budget_bins),
    ), dtype=np.float32)
    return {"items": items, "mask": mask, "engine": engine}
