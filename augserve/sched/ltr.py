"""vLLM-LTR (Fu et al., NeurIPS 2024, "Efficient LLM Scheduling by Learning to Rank"): the
shortest predicted *rank* first, with its starvation control.

Source: ``hao-ai-lab/vllm-ltr``, ``vllm/core/scheduler.py``. Requests are ranked once, from the
prompt, by a ranking model (there OPT-125M trained with ListMLE; here the Stage I artifact's
LightGBM ``lambdarank`` model, ``Prediction.rank_score`` of :meth:`Predictor.predict`, higher =
longer): lower score first. Starvation control as in its fairness scripts (``fair-*.sh``:
schedule type ``...-starv200-period10``): a request left out of the batch for
``starve_after_steps`` = 200 consecutive iterations is promoted ahead of the ranking; the
promoted are ordered by the same score (``sorted(..., key=(req.pri, -req.aux_model_score))``,
``Scheduler._get_opt_ordered_requests`` in ``scheduler.py``); there it stays for ``period`` = 10
iterations in which it is scheduled. Here an admitted request runs until its call or its end
(policies cannot preempt a running request, while LTR re-sorts and preempts every iteration), so
a promotion lasts until admission and the period is not modelled. LTR's main benchmarks run
without the starvation control; the row keeps it, as the issue asks. It does not bound a wait:
the promoted are ranked too, so under sustained overload later-promoted shorter requests can
pass a long one without end, as in vllm-ltr. Static budget; KV mode: vLLM's (the request ends at
the call), as LTR runs on vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.contract import EngineState, KVMode, RequestView
from augserve.predictor import Predictor
from augserve.sched.queue_policy import ValueQueuePolicy, check_predictor

STARVE_AFTER_STEPS = 200  # starv200 (vllm-ltr fair-*.sh)
PERIOD_STEPS = 10  # period10: iterations a promoted request keeps priority (not modelled)


class LTRPolicy(ValueQueuePolicy):
    name = "ltr"
    clock_unit = "steps"
    tier_by_key = True

    def __init__(self, predictor: Predictor | None = None, max_num_batched_tokens: int = 2048,
                 starve_after_steps: int | None = STARVE_AFTER_STEPS,
                 period_steps: int = PERIOD_STEPS) -> None:
        self.predictor = check_predictor("ltr", predictor)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        if period_steps < 1:
            raise ValueError(f"period_steps={period_steps} must be >= 1")
        self.budget = int(max_num_batched_tokens)
        self.period_steps = int(period_steps)
        super().__init__(None if starve_after_steps is None else float(starve_after_steps))

    def values(self, views: Sequence[RequestView], state: EngineState) -> np.ndarray:
        # the ranking model's score from the prompt (arrival features), as LTR scores once
        return np.asarray(self.predictor.predict(views).rank_score, dtype=float)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM
