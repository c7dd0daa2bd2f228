"""Earliest deadline first by the TTFT deadline, with the late triaged behind.

A request waiting for its first token has the deadline ``arrival + ttft``; a turn after a tool
return (its first token came already) has ``submit + ttft`` — the per-turn resume SLO
(``docs/metrics.md``) with the same threshold, or the SLO's own ``resume`` threshold when it
has one. Lower deadline first. Pure EDF collapses under overload (it serves the request that
is missing its deadline by most, so every request misses: the domino effect, Liu & Layland
1973; Buttazzo, *Hard Real-Time Computing Systems*, §9.2), so as with AugServe a first token
past its deadline goes ``late_penalty`` seconds behind, and the rate-limited starvation tier
bounds its wait (:mod:`augserve.sched.fcfs_slo`). Preempted requests keep their deadline. KV at
a call: InferCept's min-waste on the mean observed tool time. Static budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, RequestView
from augserve.sched.fcfs_slo import FCFSSLOPolicy
from augserve.slo import SLOSpec, parse_slo


class EDFPolicy(FCFSSLOPolicy):
    """EDF by TTFT / resume deadline (see the module docstring)."""

    name = "edf"

    def __init__(self, max_num_batched_tokens: int = 2048, slo: SLOSpec | dict = None,
                 late_penalty: float = 1e9, starve_after_s: float | None = 15.0,
                 starve_every_s: float = 1.0, default_tool_s: float = 1.0,
                 name: str | None = None) -> None:
        super().__init__("arrival", "infercept", max_num_batched_tokens, slo, late_penalty,
                         starve_after_s, starve_every_s, default_tool_s, name)
        resume_ms = parse_slo(slo).get("resume")
        assert self.triage.ttft_s is not None
        self.turn_s = resume_ms / 1e3 if resume_ms is not None else self.triage.ttft_s

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        ttft = self.triage.ttft_s
        assert ttft is not None
        return np.array([v.arrival_s + ttft if v.generated_tokens == 0
                         else v.submit_s + self.turn_s for v in views], dtype=float)
