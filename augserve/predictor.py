"""What augserve asks of a Stage I predictor. Implementations live in ``predictors/`` and are
wired by Hydra; augserve never imports them.

A predictor turns policy-visible request views into predictions, batched (one array entry per
view). ``predict`` uses only what is known at arrival; ``predict_remaining`` may also use the
runtime fields of the view (tokens generated, calls made, last return length, elapsed tool time)
and predicts what is *left*.

Optional: ``predict_tool_s(views)`` (the remaining-state tool duration alone, for the KV decision
at a call; :func:`predict_tool_s` falls back to ``predict_remaining``) and ``reset()`` (forget
cached requests at the start of a run; :func:`reset_predictor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from augserve.contract import RequestView


@dataclass(frozen=True, slots=True)
class Prediction:
    """Per-request predictions (arrays of equal length)."""

    output_tokens: np.ndarray  # tokens to generate (total, or remaining)
    num_calls: np.ndarray  # tool calls to make (total, or remaining)
    tool_s: np.ndarray  # mean duration of one call (s)
    rank_score: np.ndarray  # ordering score from a ranking model: lower = shorter job


@runtime_checkable
class Predictor(Protocol):
    def predict(self, views: Sequence[RequestView]) -> Prediction:
        """Predictions from arrival-time features."""
        ...

    def predict_remaining(self, views: Sequence[RequestView]) -> Prediction:
        """Predictions of what is left, from arrival and runtime features."""
        ...


def predict_tool_s(predictor: Predictor, views: Sequence[RequestView]) -> np.ndarray:
    """Remaining-state tool-call duration (s) of each view: the predictor's own
    ``predict_tool_s`` where it has one (it evaluates only that model), else
    ``predict_remaining(views).tool_s``."""
    f = getattr(predictor, "predict_tool_s", None)
    return np.asarray(f(views) if f is not None else predictor.predict_remaining(views).tool_s,
                      dtype=np.float64)


def reset_predictor(predictor: Predictor | None) -> None:
    """Start of a run: let a predictor with caches (``reset()``) forget earlier requests."""
    f = getattr(predictor, "reset", None)
    if f is not None:
        f()
