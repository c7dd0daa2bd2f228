"""Learned Stage II behind augserve's policy interface.

:class:`LearnedStage2` keeps AugServe's queue (Stage I/II values, SLO-deadline re-keying, the
rate-limited starvation tier, min-waste KV mode) and lets a decision maker re-rank the first K
candidates and pick the step's token budget from a few bins. A *decision* happens at every step
where a request could be admitted (waiting requests, free KV, a free sequence slot) — the same
points where the gymnasium env stops; on other steps the previous budget stays and admission
follows AugServe's own order. The starvation tier's head, on a tier turn (at most one every
``starve_every_s``, as in AugServe), keeps its place ahead of the ranking, so AugServe's
starvation bound still holds.

Predictions come from the configured predictor as AugServe asks for them (a request's
arrival features are computed when it first enters the queue, inside the run).

Subclasses implement ``decide(obs) -> (scores [K], budget_bin)``: :class:`rl.env.ActionPolicy`
returns the env's action, :class:`rl.rl_policy.RLPolicy` runs the trained network.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Callable, Iterator

import numpy as np

from augserve.contract import EngineState, RequestView
from augserve.predictor import Predictor
from augserve.sched.augserve import AugServePolicy
from rl.obs import PROMOTED, Candidate, ObsSpec, build_observation, raw_row

_NO_PRED = (1.0, 0.0, 0.0, 1.0)  # (out, calls, tool_s, value) of a request not yet valued


def decision_pending(state: EngineState) -> bool:
    """True when a waiting request could be admitted this step (the env's decision points)."""
    return (state.num_waiting > 0 and state.free_blocks > 0
            and state.num_running < state.info.max_num_seqs)


class LearnedStage2(AugServePolicy):
    """AugServe with a learned re-ranking of the top-K and a learned budget."""

    name = "rl"

    def __init__(self, predictor: Predictor | None = None, k: int = 64,
                 budget_bins: tuple[int, ...] | list[int] = (256, 512, 1024, 2048, 4096),
                 **augserve: object) -> None:
        augserve.setdefault("dynamic_budget", False)
        super().__init__(predictor, **augserve)  # type: ignore[arg-type]
        if k < 1 or not budget_bins or min(budget_bins) < 1:
            raise ValueError("k must be >= 1 and budget_bins positive")
        self.spec = ObsSpec(k=int(k), budget_bins=tuple(int(b) for b in budget_bins))
        self._budget = self.spec.budget_bins[len(self.spec.budget_bins) // 2]

    def _reset_queue(self) -> None:
        super()._reset_queue()
        self._cands: list[Candidate] = []
        self._rows: dict[str, tuple] = {}  # rid -> rl.obs.raw_row while it waits
        self._scores: np.ndarray | None = None
        self._max_promoted: int | None = None  # tier requests allowed first at this decision
        self._budget = self.spec.budget_bins[len(self.spec.budget_bins) // 2] if hasattr(
            self, "spec") else 1024
        self._last_arrival: float | None = None
        self._gap = 1.0  # EWMA of inter-arrival gaps (s)

    # ------------------------------------------------------------------ observation
    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        if view.generated_tokens == 0 and view.calls_done == 0 and not view.preempted:
            if self._last_arrival is not None:
                self._gap = 0.95 * self._gap + 0.05 * max(state.now_s - self._last_arrival, 0.0)
            self._last_arrival = state.now_s
        super().on_enqueue(view, state)

    def _tier_turn(self, now: float) -> int | None:
        """Tier requests that go first now (ValueQueuePolicy.candidates' rule): None = all."""
        if self.starve_every <= 0:
            return None
        head = self.queue.promoted_head(now) if now - self._tier_last >= self.starve_every \
            else None
        self._tier_offer = head.rid if head is not None else None
        self._tier_clock = now
        return 1 if head is not None else 0

    def observe(self, state: EngineState) -> dict[str, np.ndarray]:
        """Observation at this step; also fixes the candidate list the action refers to."""
        self._flush(state)
        self.refresh(state)
        now = self.clock(state)
        self._max_promoted = self._tier_turn(now)
        self._scores = None
        cache, rows = self.pred_cache, self._rows
        cands = []
        raw = []
        for view, promoted in itertools.islice(self.queue.ordered(now, self._max_promoted),
                                               self.spec.k):
            p = cache.get(view.rid, _NO_PRED)
            cands.append(Candidate(view, promoted, p[3], p[0], p[1], p[2]))
            row = rows.get(view.rid)
            raw.append(row if row is not None else raw_row(view, p[3], p[0], p[1], p[2]))
        self._cands = cands
        rate = 1.0 / self._gap if self._gap > 0 else 0.0
        arr = None
        if raw:
            arr = np.array(raw, dtype=np.float64)
            arr[:, PROMOTED] = [c.promoted for c in cands]
        return build_observation(self.spec, cands, state, len(self.queue),
                                 state.waiting_prefill_tokens, rate, self._budget, self.ttft_s,
                                 raw=arr)

    def adjust_key(self, view: RequestView, key: float, state: EngineState) -> float:
        key = super().adjust_key(view, key, state)
        # the observation's row of this request, fixed while it waits (rl.obs.raw_row)
        p = self.pred_cache.get(view.rid, _NO_PRED)
        self._rows[view.rid] = raw_row(view, p[3], p[0], p[1], p[2])
        return key

    def on_admit(self, view: RequestView) -> None:
        self._rows.pop(view.rid, None)
        super().on_admit(view)

    def on_leave(self, view: RequestView) -> None:
        self._rows.pop(view.rid, None)
        super().on_leave(view)

    @abstractmethod
    def decide(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """(scores for the K slots, higher first; budget bin index)."""

    def apply(self, scores: np.ndarray, budget_bin: int) -> None:
        """Use ``scores`` (for the candidates of the last :meth:`observe`) and a budget bin."""
        if not 0 <= int(budget_bin) < len(self.spec.budget_bins):
            raise ValueError(f"budget bin {budget_bin} outside 0..{len(self.spec.budget_bins)-1}")
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != self.spec.k:
            raise ValueError(f"scores has {s.shape[0]} entries, expected K={self.spec.k}")
        if np.isnan(s[:len(self._cands)]).any():
            raise ValueError("scores contain NaN")
        self._scores = s
        self._budget = self.spec.budget_bins[int(budget_bin)]

    # ------------------------------------------------------------------ policy interface
    def on_step(self, state: EngineState) -> None:
        """The network's decision, on the steps where a waiting request could be admitted."""
        if decision_pending(state):
            obs = self.observe(state)
            self.apply(*self.decide(obs))

    def token_budget(self, state: EngineState) -> int:
        return self._budget

    def candidates(
        self, state: EngineState, fits: Callable[[RequestView], bool]
    ) -> Iterator[RequestView]:
        cands, scores = self._cands, self._scores
        self._scores = None
        if scores is None or not cands:  # no decision this step: AugServe's own order
            yield from super().candidates(state, fits)
            return
        n = len(cands)
        ranked = [i for i in range(n) if cands[i].promoted]  # the tier head stays first
        rest = [i for i in range(n) if not cands[i].promoted]
        ranked += sorted(rest, key=lambda i: (-scores[i], i))
        seen = {cands[i].view.rid for i in ranked}
        order = itertools.chain(((cands[i].view, cands[i].promoted) for i in ranked),
                                ((v, p) for v, p in
                                 self.queue.ordered(self.clock(state), self._max_promoted)
                                 if v.rid not in seen))
        skipped = 0
        for view, promoted in order:
            if promoted or skipped >= self.lookahead or fits(view):
                yield view
            else:
                skipped += 1
