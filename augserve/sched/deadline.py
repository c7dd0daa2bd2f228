"""TTFT-deadline triage: the one rule that makes a queue "know the SLO".

A request still waiting for its first token when its TTFT deadline (arrival + the SLO's
``ttft``) passes can no longer meet the SLO; serving it before requests that still can only
converts one more miss into several. :class:`TTFTTriage` adds ``late_penalty`` (in the queue's
key units) to such a request's key: once when it enters the queue already late, or when its
deadline passes while it waits (a deadline heap, O(log n) per request). The rate-limited
starvation tier of :class:`~augserve.sched.queue_policy.ValueQueuePolicy` still bounds its
wait. AugServe uses it; so do the SLO-aware baselines (``vllm_slo``, ``infercept_slo``,
``edf``, ``hand_rule``), so that a table separates knowing the SLO from predicting the work.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from augserve.contract import EngineState, RequestView
from augserve.slo import SLOSpec, parse_slo


def ttft_s(slo: SLOSpec | dict) -> float | None:
    """The SLO's TTFT threshold in seconds (None without one)."""
    ms = parse_slo(slo).get("ttft")
    return None if ms is None else ms / 1e3


class TTFTTriage:
    """Late first tokens go ``late_penalty`` behind; ``ttft_s`` None switches it off."""

    def __init__(self, ttft_s: float | None, late_penalty: float) -> None:
        if late_penalty < 0:
            raise ValueError(f"late_penalty={late_penalty} must be >= 0")
        self.ttft_s = ttft_s
        self.late_penalty = float(late_penalty)
        self.reset()

    def reset(self) -> None:
        self._deadlines: list[tuple[float, int, RequestView]] = []
        self._seq = 0
        self._keys: dict[str, float] = {}  # rid -> its key in the queue

    def key(self, view: RequestView, key: float, state: EngineState) -> float:
        """``view``'s key as it enters the queue (late: penalised; else its deadline noted)."""
        if self.ttft_s is not None and view.generated_tokens == 0:
            deadline = view.arrival_s + self.ttft_s
            if state.now_s >= deadline:
                key += self.late_penalty
            elif view.rid not in self._keys:
                self._seq += 1
                heapq.heappush(self._deadlines, (deadline, self._seq, view))
        self._keys[view.rid] = key
        return key

    def due(self, state: EngineState, queued: set[str] | object) -> Iterator[tuple[RequestView,
                                                                                float]]:
        """(view, new key) of queued requests whose deadline passed by ``state.now_s``."""
        dl = self._deadlines
        while dl and dl[0][0] <= state.now_s:
            _, _, view = heapq.heappop(dl)
            if view.rid in queued and view.generated_tokens == 0:  # type: ignore[operator]
                self._keys[view.rid] += self.late_penalty
                yield view, self._keys[view.rid]

    def forget(self, rid: str) -> None:
        self._keys.pop(rid, None)
