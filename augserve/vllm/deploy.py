"""Hydra-free policy factory for the vLLM scheduler classes (``--additional-config``).

``--additional-config '{"augserve": {...}}'`` keys:

=========================  =========================================================================
key                        meaning
=========================  =========================================================================
``policy``                 ``vllm`` (default), ``infercept``, ``augserve``, ``lamps``, ``ltr``,
                           ``predicted_sjf``, ``rl_ckpt`` (the learned Stage II; its
                           ``policy_kwargs`` name the ``checkpoint`` dir), or a
                           ``module.Class`` qualname
``policy_kwargs``          keyword arguments of the policy's constructor
``max_num_batched_tokens`` the policy's static budget (default: vLLM's ``max_num_batched_tokens``)
``predictor``              a Stage I artifact directory (e.g. ``data/predictors/lgbm``), or
                           ``hints`` (default) to use only per-request hints
``slo``                    SLO spec for policies that take one (``"ttft:1000"``)
``profile``                a calibrated cost profile (name or yaml path) for the engine's step
                           timings (``EngineInfo.step_floor_s`` / ``prefill_s_per_token``)
``trace``                  a JSONL file: one line per request entering the waiting queue (what
                           the policy sees, hints included) and per admission (step, budget)
=========================  =========================================================================

This module is the composition root of a vLLM deployment (the role Hydra plays for
``serve.py``): it is the only place in ``augserve.vllm`` that may import ``predictors/`` or
``rl/``, and only when the configuration names an artifact or the learned policy.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from augserve.contract import RequestView
from augserve.predictor import Prediction, Predictor, predict_tool_s, reset_predictor
from augserve.sched.base import Policy

#: policy name -> (qualname, needs a predictor)
POLICIES: dict[str, tuple[str, bool]] = {
    "vllm": ("augserve.sched.vllm.VLLMPolicy", False),
    "infercept": ("augserve.sched.infercept.InferCeptPolicy", False),
    "augserve": ("augserve.sched.augserve.AugServePolicy", True),
    "lamps": ("augserve.sched.lamps.LAMPSPolicy", True),
    "ltr": ("augserve.sched.ltr.LTRPolicy", True),
    "predicted_sjf": ("augserve.sched.predicted_sjf.PredictedSJFPolicy", True),
    "rl_ckpt": ("rl.rl_policy.make_rl_policy", True),  # policy_kwargs: {"checkpoint": <dir>}
}


class HintPredictor:
    """Predictions from per-request hints (``predicted_*`` in ``extra_args`` / ``vllm_xargs``),
    falling back to a base predictor (a Stage I artifact) or to fixed defaults.

    ``predicted_output_tokens`` and ``predicted_num_calls`` are totals for the whole request;
    ``predict_remaining`` subtracts what the view has already generated / called.
    """

    def __init__(self, base: Predictor | None = None, output_tokens: float = 256.0,
                 num_calls: float = 0.0, tool_s: float = 1.0) -> None:
        self.base = base
        self.defaults = (float(output_tokens), float(num_calls), float(tool_s))

    def _predict(self, views: Sequence[RequestView], remaining: bool) -> Prediction:
        n = len(views)
        if self.base is not None:
            p = (self.base.predict_remaining(views) if remaining else self.base.predict(views))
            out, calls, tool = (np.array(p.output_tokens, dtype=float),
                                np.array(p.num_calls, dtype=float),
                                np.array(p.tool_s, dtype=float))
            rank = np.array(p.rank_score, dtype=float)
        else:
            out = np.full(n, self.defaults[0])
            calls = np.full(n, self.defaults[1])
            tool = np.full(n, self.defaults[2])
            rank = out.copy()
        for i, v in enumerate(views):
            meta = v.metadata or {}
            hint_out = meta.get("predicted_output_tokens")
            if isinstance(hint_out, (int, float)):
                left = float(hint_out) - (v.generated_tokens if remaining else 0)
                out[i] = max(1.0, left)
                rank[i] = out[i]
            hint_calls = meta.get("predicted_num_calls")
            if isinstance(hint_calls, (int, float)):
                calls[i] = max(0.0, float(hint_calls) - (v.calls_done if remaining else 0))
            hint_tool = meta.get("predicted_tool_s")
            if isinstance(hint_tool, (int, float)):
                tool[i] = max(0.0, float(hint_tool))
        return Prediction(output_tokens=out, num_calls=calls, tool_s=tool, rank_score=rank)

    def reset(self) -> None:
        reset_predictor(self.base)

    def predict_tool_s(self, views: Sequence[RequestView]) -> np.ndarray:
        """The remaining-state tool duration (s): the ``predicted_tool_s`` hint, else the base
        predictor's (its tool model alone), else the default."""
        tool = (predict_tool_s(self.base, views) if self.base is not None
                else np.full(len(views), self.defaults[2]))
        for i, v in enumerate(views):
            hint = (v.metadata or {}).get("predicted_tool_s")
            if isinstance(hint, (int, float)):
                tool[i] = max(0.0, float(hint))
        return tool

    def predict(self, views: Sequence[RequestView]) -> Prediction:
        return self._predict(views, remaining=False)

    def predict_remaining(self, views: Sequence[RequestView]) -> Prediction:
        return self._predict(views, remaining=True)


def load_predictor(spec: str | None) -> Predictor:
    """``None``/``"hints"``: hints only; a path: that artifact (hints override it)."""
    if spec in (None, "", "hints"):
        return HintPredictor()
    from predictors.artifact import load_predictor as load_artifact  # composition root only

    return HintPredictor(base=load_artifact(str(spec)))


def _resolve(name: str) -> tuple[Callable[..., Policy], bool]:
    """A policy class, or a factory returning a policy (a Hydra ``_target_`` may be either)."""
    qual, needs = POLICIES.get(name, (name, False))
    if "." not in qual:
        raise ValueError(f"unknown augserve policy {name!r}; known: {', '.join(POLICIES)} "
                         "or a module.Class qualname")
    mod, _, cls = qual.rpartition(".")
    obj = getattr(importlib.import_module(mod), cls)
    if (isinstance(obj, type) and not issubclass(obj, Policy)) or not callable(obj):
        raise TypeError(f"{qual} is not an augserve Policy")
    if name not in POLICIES:
        needs = "predictor" in inspect.signature(obj).parameters
    return obj, needs


def make_policy(cfg: Mapping[str, Any], max_num_batched_tokens: int) -> Policy:
    """The policy an ``{"augserve": cfg}`` additional config asks for (see module docstring)."""
    known = {"policy", "policy_kwargs", "max_num_batched_tokens", "predictor", "slo", "profile",
             "trace"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown augserve setting {unknown[0]!r} in --additional-config; "
                         f"known: {', '.join(sorted(known))}")
    name = str(cfg.get("policy") or "vllm")
    cls, needs_predictor = _resolve(name)
    if getattr(cls, "oracle", False):
        raise ValueError(f"policy {name!r} reads request scripts (oracle); a server has none")
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = dict(cfg.get("policy_kwargs") or {})
    if "max_num_batched_tokens" in params:
        kwargs.setdefault("max_num_batched_tokens",
                          int(cfg.get("max_num_batched_tokens") or max_num_batched_tokens))
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if ("slo" in params or takes_any) and cfg.get("slo") is not None:  # RLPolicy: **augserve
        kwargs.setdefault("slo", cfg["slo"])
    if needs_predictor and "predictor" in params:
        kwargs.setdefault("predictor", load_predictor(cfg.get("predictor")))
    policy = cls(**kwargs)
    if not isinstance(policy, Policy):
        raise TypeError(f"policy {name!r} built a {type(policy).__name__}, not an augserve Policy")
    return policy


def profile_timing(profile: str | None) -> tuple[float | None, float | None]:
    """(cheapest step s, marginal s per token) from a cost profile, as SimEngine reports them."""
    if not profile:
        return None, None
    from augserve.engine.cost import LinearCostModel, load_profile

    cost = LinearCostModel(load_profile(profile))
    floor = cost.step_time(1, 0, 0.0)
    per_tok = (cost.step_time(4096, 0, 0.0) - cost.step_time(2048, 0, 0.0)) / 2048
    return floor, per_tok
