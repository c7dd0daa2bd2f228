"""Observations for learned Stage II: top-K candidates ``[K, F]`` + mask ``[K]`` + engine ``[G]``.

One builder serves the gymnasium env (training) and :class:`rl.policy.LearnedStage2` subclasses
(serving), so the two cannot drift. Candidates are the first K requests in AugServe's order (the
starvation tier's head on a tier turn, then by Stage I/II value, SLO-late requests last), which
keeps the env cheap and the ranking problem small. All features are float32, non-negative and
roughly unit-scaled (log1p of token counts and seconds), clipped to :data:`OBS_HIGH`. Built with
numpy over the candidate arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augserve.contract import EngineState, RequestView

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
    "promoted",  # 1 if it is the starvation tier's head on a tier turn (admitted first)
    "value_rank",  # its position in AugServe's order / K
    "ttft_pending",  # 1 if it has no first token yet and its TTFT deadline is still ahead
    "ttft_slack_s",  # seconds left to its TTFT deadline (0 once it has a token or is late), log1p
    "ttft_late",  # 1 if it has no first token and its TTFT deadline has passed
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


#: every feature lies in [0, OBS_HIGH] (log1p scales, fractions and flags; clipped there)
OBS_HIGH = 50.0


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


def raw_row(view: RequestView, value: float, pred_out: float, pred_calls: float,
            pred_tool_s: float, promoted: bool = False) -> tuple:
    """What :func:`build_observation` reads of one candidate (``promoted`` at column 11).

    Apart from ``promoted``, nothing in it changes while the request waits (a waiting request
    makes no progress, and its predictions are fixed when it enters the queue), so a policy
    may compute it once per stay in the queue.
    """
    v = view
    return (value, pred_out, pred_calls, pred_tool_s, v.generated_tokens, v.wait_since_s,
            v.prompt_tokens, v.context_tokens, v.computed_tokens, v.calls_done > 0,
            v.preempted, promoted, v.arrival_s)


PROMOTED = 11  # column of ``promoted`` in :func:`raw_row`


def build_observation(
    spec: ObsSpec,
    cands: Sequence[Candidate],
    state: EngineState,
    n_waiting: int,
    backlog_tokens: int,
    arrival_rate: float,
    last_budget: int,
    ttft_s: float | None = None,
    raw: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The observation dict for ``cands`` (at most ``spec.k``; the rest is masked).

    ``ttft_s`` is the TTFT SLO (s); without one the three ``ttft_*`` features stay 0.
    ``raw``: the candidates' :func:`raw_row` rows ``[n, 13]`` if the caller keeps them
    (otherwise read off the views).
    """
    k = spec.k
    items = np.zeros((k, spec.f), dtype=np.float32)
    mask = np.zeros(k, dtype=np.int8)
    info = state.info
    n = min(len(cands), k)
    if n:
        if raw is None:
            raw = np.array([raw_row(c.view, c.value, c.pred_out, c.pred_calls, c.pred_tool_s,
                                    c.promoted) for c in cands[:n]], dtype=np.float64)
        raw = raw[:n]
        ctx = raw[:, 7]
        unc = np.maximum(ctx - raw[:, 8], 0.0)
        out = items[:n]
        out[:, 0] = np.log1p(np.maximum(raw[:, 0], 0.0))
        out[:, 1] = np.log1p(np.maximum(raw[:, 1], 0.0))
        out[:, 2] = np.maximum(raw[:, 2], 0.0)
        out[:, 3] = np.log1p(np.maximum(raw[:, 3], 0.0))
        out[:, 4] = np.log1p(raw[:, 4])
        out[:, 5] = np.log1p(np.maximum(state.now_s - raw[:, 5], 0.0))
        out[:, 6] = np.log1p(raw[:, 6])
        out[:, 7] = np.log1p(ctx)
        out[:, 8] = np.log1p(unc)
        out[:, 9] = np.minimum(-(-unc // info.block_size) / max(state.free_blocks, 1), 4.0)
        out[:, 10:13] = raw[:, 9:12]
        out[:, 13] = np.arange(n) / k
        if ttft_s is not None:
            # the SLO counts only the first token: what is still at stake is the TTFT of
            # requests without one, and how much time each has left
            pending = raw[:, 4] == 0
            slack = raw[:, 12] + ttft_s - state.now_s
            on_time = pending & (slack > 0)
            out[:, 14] = on_time
            out[:, 15] = np.where(on_time, np.log1p(np.maximum(slack, 0.0)), 0.0)
            out[:, 16] = pending & ~on_time
        np.minimum(out, OBS_HIGH, out=out)
        mask[:n] = 1
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
    np.minimum(engine, OBS_HIGH, out=engine)
    return {"items": items, "mask": mask, "engine": engine}
