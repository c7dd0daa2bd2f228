"""The hand rule read off the learned policy's decisions (``experiments/rl_decisions.py``).

What the shipped RL policy's first picks agree with most: requests still waiting for their
first token and on time first, then the rest (turns after a tool return), requests that missed
their TTFT deadline last; within each class the cheapest prefill first (uncomputed context
tokens: prompt, returned tokens, context to recompute), ties by queue entry. It predicts nothing:
it reads only what the engine knows. The late class comes from the same
:class:`~augserve.sched.deadline.TTFTTriage` AugServe uses, and the same rate-limited
starvation tier bounds every wait. KV at a call: InferCept's min-waste on the mean observed
tool time. Static budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, RequestView
from augserve.sched.fcfs_slo import FCFSSLOPolicy
from augserve.slo import SLOSpec

#: key offset of the second class (tokens; above any context length)
CLASS_GAP = 1e7


class HandRulePolicy(FCFSSLOPolicy):
    """First token pending and on time, then the rest, late last; cheapest prefill first."""

    name = "hand_rule"

    def __init__(self, max_num_batched_tokens: int = 2048, slo: SLOSpec | dict = None,
                 late_penalty: float = 1e9, starve_after_s: float | None = 15.0,
                 starve_every_s: float = 1.0, default_tool_s: float = 1.0,
                 name: str | None = None) -> None:
        if late_penalty <= CLASS_GAP:
            raise ValueError(f"late_penalty={late_penalty} must exceed {CLASS_GAP:g} tokens "
                             "(the late class goes behind the others)")
        super().__init__("arrival", "infercept", max_num_batched_tokens, slo, late_penalty,
                         starve_after_s, starve_every_s, default_tool_s, name)

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        return np.array([(0.0 if v.generated_tokens == 0 else CLASS_GAP)
                         + (v.context_tokens - v.computed_tokens) for v in views], dtype=float)
