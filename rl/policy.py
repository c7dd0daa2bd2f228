"""Learned Stage II behind augserve's policy interface.

:class:`LearnedStage2` keeps AugServe's queue (Stage I/II values, starvation tier, min-waste KV
mode) and lets a decision maker re-rank the first K candidates and pick the step's token budget
from a few bins. A *decision* happens at every step where a request could be admitted (waiting
requests, free KV, a free sequence slot) — the same points where the gymnasium env stops; on other
steps the previous budget stays. Promoted (starving) requests keep their place ahead of the
ranking, so AugServe's starvation bound still holds.

Subclasses implement ``decide(obs) -> (scores [K], budget_bin)``: :class:`rl.env.ActionPolicy`
returns the env's action, :class:`rl.rl_policy.RLPolicy` runs the trained network.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Callable, Iterator

import numpy as np

from augserve.predictor import Predictor
from augserve.request import EngineInfo, EngineState, RequestView
from augserve.sched.augserve import AugServePolicy
from rl.obs import Candidate, ObsSpec, build_observation


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

    def _reset_queue(self) -> None:
        super()._reset_queue()
        self._cands: list[Candidate] = []
        self._scores: np.ndarray | None = None
        self._budget = self.spec.budget_bins[len(self.spec.budget_bins) // 2] if hasattr(
            self, "spec") else 1024
        self._last_arrival: float | None = None
        self._gap = 1.0  # EWMA of inter-arrival gaps (s)

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)

    # ------------------------------------------------------------------ observation
    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        if view.generated_tokens == 0 and view.calls_done == 0 and not view.preempted:
            if self._last_arrival is not None:
                self._gap = 0.95 * self._gap + 0.05 * max(state.now_s - self._last_arrival, 0.0)
            self._last_arrival = state.now_s
        super().on_enqueue(view, state)

    def observe(self, state: EngineState) -> dict[str, np.ndarray]:
        """Observation at this step; also fixes the candidate list the action refers to."""
        self._flush(state)
        top = itertools.islice(self.queue.ordered(self.clock(state)), self.spec.k)
        self._cands = []
        for view, promoted in top:
            p = self.pred_cache.get(view.rid, (1.0, 0.0, 0.0, 1.0))
            self._cands.append(Candidate(view, promoted, p[3], p[0], p[1], p[2]))
        rate = 1.0 / self._gap if self._gap > 0 else 0.0
        return build_observation(self.spec, self._cands, state, len(self.queue),
                                 self.backlog_tokens, rate, self._budget)

    @abstractmethod
    def decide(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """(scores for the K slots, higher first; budget bin index)."""

    def apply(self, scores: np.ndarray, budget_bin: int) -> None:
        if not 0 <= int(budget_bin) < len(self.spec.budget_bins):
            raise ValueError(f"budget bin {budget_bin} outside 0..{len(self.spec.budget_bins)-1}")
        self._scores = np.asarray(scores, dtype=np.float64)
        self._budget = self.spec.budget_bins[int(budget_bin)]

    # ------------------------------------------------------------------ policy interface
    def token_budget(self, state: EngineState) -> int:
        if decision_pending(state):
            obs = self.observe(state)
            self.apply(*self.decide(obs))
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
        ranked = [i for i in range(n) if cands[i].promoted]  # the starvation tier stays first
        rest = [i for i in range(n) if not cands[i].promoted]
        ranked += sorted(rest, key=lambda i: (-scores[i], i))
        seen = {cands[i].view.rid for i in ranked}
        order = itertools.chain((cands[i] for i in ranked),
                                (Candidate(v, p, 0, 0, 0, 0) for v, p in
                                 self.queue.ordered(self.clock(state))
                                 if v.rid not in seen))
        skipped = 0
        for c in order:
            if c.promoted or skipped >= self.lookahead or fits(c.view):
                yield c.view
            else:
                skipped += 1
