"""PredictedSJF orders by predicted remaining service (test double predictor, named as such)."""

from __future__ import annotations

import numpy as np
import pytest

from augserve.engine.factory import make_sim_engine
from augserve.predictor import Prediction
from augserve.request import AugRequest, Segment
from augserve.sched.predicted_sjf import PredictedSJFPolicy


class FakeLengthPredictor:
    """Test double: 'predicts' a fixed length per request id (not a model)."""

    def __init__(self, lengths: dict[str, float]) -> None:
        self.lengths = lengths

    def predict(self, views):
        return self.predict_remaining(views)

    def predict_remaining(self, views):
        out = np.array([self.lengths[v.rid] - v.generated_tokens for v in views], float)
        n = len(views)
        return Prediction(out, np.zeros(n), np.full(n, 1.0), out)


def _reqs() -> list[AugRequest]:
    # 'long' arrives first and holds the only sequence slot; then 'b' (300) and 'c' (5) wait
    return [AugRequest("long", 0.0, 10, (Segment(50),)),
            AugRequest("b", 0.001, 10, (Segment(300),)),
            AugRequest("c", 0.002, 10, (Segment(5),))]


def test_orders_waiting_queue_by_prediction() -> None:
    eng = make_sim_engine(constant_step_s=0.01, max_num_seqs=1, max_num_batched_tokens=64)
    good = PredictedSJFPolicy(FakeLengthPredictor({"long": 50, "b": 300, "c": 5}), 64)
    rec = {r.rid: r for r in eng.run(_reqs(), good).records}
    assert rec["c"].token_s[0] < rec["b"].token_s[0]  # the short one goes first
    wrong = PredictedSJFPolicy(FakeLengthPredictor({"long": 50, "b": 5, "c": 300}), 64)
    rec = {r.rid: r for r in eng.run(_reqs(), wrong).records}
    assert rec["b"].token_s[0] < rec["c"].token_s[0]  # it follows the (wrong) prediction


def test_needs_a_predictor() -> None:
    with pytest.raises(ValueError, match="predictor=lgbm"):
        PredictedSJFPolicy(None)
    with pytest.raises(TypeError, match="Predictor protocol"):
        PredictedSJFPolicy(object())  # type: ignore[arg-type]
