"""Base for policies that keep their own value-ordered waiting queue (AugServe, LAMPS, LTR).

Subclasses say what a request is worth (``values``, lower first) and on which clock waiting is
measured (``clock``: seconds or engine steps). Requests entering the queue between two steps are
valued together (one batched predictor call) when the engine next asks for candidates. A policy
that knows the SLO sets ``triage`` (:class:`~augserve.sched.deadline.TTFTTriage`): late first
tokens are re-keyed behind the rest.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from augserve.contract import EngineInfo, EngineState, RequestView
from augserve.predictor import Predictor, reset_predictor
from augserve.sched.base import Policy
from augserve.sched.deadline import TTFTTriage
from augserve.sched.value_queue import ValueQueue


def check_predictor(name: str, predictor: object) -> Predictor:
    """A clear error when a predictor-driven policy is configured without a usable one."""
    if predictor is None:
        raise ValueError(f"policy {name} needs a predictor: add predictor=lgbm "
                         "(or another conf/predictor/ entry)")
    if not isinstance(predictor, Predictor):
        raise TypeError(f"{type(predictor).__name__} does not implement augserve's "
                        "Predictor protocol (predict, predict_remaining)")
    return predictor


class ValueQueuePolicy(Policy):
    """Owns the waiting queue: a :class:`ValueQueue` fed in batches."""

    #: waiting-time clock: "s" (seconds) or "steps" (engine steps)
    clock_unit: str = "s"
    #: TTFT-deadline re-keying (None: the policy does not know the SLO)
    triage: TTFTTriage | None = None
    #: the starvation tier ordered by value instead of FIFO (vLLM-LTR)
    tier_by_key: bool = False

    def __init__(self, starve_after: float | None, age_weight: float = 0.0,
                 lookahead: int = 0, starve_every: float = 0.0) -> None:
        if age_weight < 0 or lookahead < 0 or starve_every < 0:
            raise ValueError("age_weight, lookahead and starve_every must be >= 0")
        self.starve_after = starve_after
        self.starve_every = float(starve_every)
        self.age_weight = float(age_weight)
        self.lookahead = int(lookahead)
        self._reset_queue()

    def _reset_queue(self) -> None:
        self.queue = ValueQueue(self.starve_after, self.tier_by_key)
        self._pending: list[tuple[RequestView, float]] = []
        self._waiting: set[str] = set()  # rids in the queue (valued or pending)
        self._tier_offer: str | None = None  # rid offered on this step's tier turn
        self._tier_last = -float("inf")  # clock of the last admission from the tier
        self._tier_clock = 0.0
        if self.triage is not None:
            self.triage.reset()

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        self._reset_queue()
        reset_predictor(getattr(self, "predictor", None))

    def clock(self, state: EngineState) -> float:
        return float(state.step) if self.clock_unit == "steps" else state.now_s

    @abstractmethod
    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        """Value of each view (lower is served first)."""

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        self._pending.append((view, self.clock(state)))
        self._waiting.add(view.rid)

    def on_admit(self, view: RequestView) -> None:
        if view.rid == self._tier_offer:
            self._tier_last = self._tier_clock
            self._tier_offer = None
        self.queue.remove(view.rid)
        self._waiting.discard(view.rid)

    def on_leave(self, view: RequestView) -> None:
        if view.rid in self._waiting:  # aborted while waiting (maybe not valued yet)
            self._pending = [(v, t) for v, t in self._pending if v.rid != view.rid]
            if view.rid == self._tier_offer:  # not an admission from the tier
                self._tier_offer = None
            self.queue.remove(view.rid)
            self._waiting.discard(view.rid)
        if self.triage is not None:
            self.triage.forget(view.rid)

    def _flush(self, state: EngineState) -> None:
        if not self._pending:
            return
        vals = self.values([v for v, _ in self._pending], state)
        unit = (self.info.step_floor_s or 1e-3) if self.clock_unit == "s" else 1.0
        for (v, entered), val in zip(self._pending, vals, strict=True):
            # aging V - w·(now - entered)/unit orders like V + w·entered/unit: time-invariant
            key = self.adjust_key(v, float(val) + self.age_weight * entered / unit, state)
            self.queue.push(v, key, entered, self.starves(v))
        self._pending.clear()

    def starves(self, view: RequestView) -> bool:
        """Hook: whether ``view`` may join the starvation tier (default: every request)."""
        return True

    def adjust_key(self, view: RequestView, key: float, state: EngineState) -> float:
        """Hook: final heap key of a request entering the queue (default: the triage's)."""
        return key if self.triage is None else self.triage.key(view, key, state)

    def refresh(self, state: EngineState) -> None:
        """Hook: re-key queued requests whose situation changed with time (default: late
        first tokens, with a triage)."""
        if self.triage is not None:
            for view, key in self.triage.due(state, self.queue):
                self.queue.rekey(view, key)

    def candidates(
        self, state: EngineState, fits: Callable[[RequestView], bool]
    ) -> Iterator[RequestView]:
        self._flush(state)
        self.refresh(state)
        now = self.clock(state)
        if self.starve_every <= 0:  # strict: the whole tier first, every step
            return self.queue.candidates(now, fits, self.lookahead)
        turn = now - self._tier_last >= self.starve_every
        head = self.queue.promoted_head(now) if turn else None
        self._tier_offer = head.rid if head is not None else None
        self._tier_clock = now
        return self.queue.candidates(now, fits, self.lookahead, 1 if head is not None else 0)
