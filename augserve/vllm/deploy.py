"""The policy factory of the vLLM scheduler classes (``--additional-config``).

``--additional-config '{"augserve": {...}}'`` keys:

=========================  =========================================================================
key                        meaning
=========================  =========================================================================
``policy``                 a ``conf/policy/<name>.yaml`` name (default ``vllm``; ``augserve``,
                           ``augserve_no_budget``, ``augserve_stage1``, ``infercept``, ``lamps``,
                           ``ltr``, ``predicted_sjf``, ``rl_ckpt``: the learned Stage II, its
                           ``checkpoint`` dir from the yaml unless ``policy_kwargs`` names one;
                           not ``oracle``, which reads request scripts), or a ``module.Class``
                           qualname
``policy_kwargs``          keyword arguments of the policy's constructor (over the yaml's)
``max_num_batched_tokens`` the policy's static budget (default: vLLM's ``max_num_batched_tokens``;
                           the yaml's value is the simulator's and is not used)
``predictor``              a Stage I artifact directory (e.g. ``data/predictors/lgbm``), or
                           ``hints`` (default) to use only per-request hints
``slo``                    SLO spec for policies that take one (``"ttft:1000"``)
``profile``                a calibrated cost profile (name or yaml path) for the engine's step
                           timings (``EngineInfo.step_floor_s`` / ``prefill_s_per_token``)
``trace``                  a JSONL file: one line per request entering the waiting queue (what
                           the policy sees, hints included) and per admission (step, budget)
=========================  =========================================================================

Policy names are the project's one registry, the Hydra configs ``conf/policy/*.yaml`` that
``serve.py`` uses (shipped in the package as ``augserve/conf/``): a name's ``_target_`` and
keys are the constructor's arguments, with the deployment's predictor for ``${predictor}`` and
its ``slo`` for ``${slo.spec}``, instantiated as Hydra does (nested ``_target_`` nodes are built,
other nested nodes are passed as ``DictConfig``/``ListConfig``); ``policy_kwargs`` and the
budget rule above override them.

This module is the composition root of a vLLM deployment (the role Hydra plays for
``serve.py``): it is the only place in ``augserve.vllm`` that may import ``predictors/`` or
``rl/``, and only when the configuration names an artifact or the learned policy.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augserve.contract import RequestView
from augserve.predictor import Prediction, Predictor, predict_tool_s, reset_predictor
from augserve.sched.base import Policy

#: where the Hydra configs are: ``augserve/conf`` in an installed wheel (package data), the
#: repository's top-level ``conf/`` in a checkout or an editable install
_CONF_CANDIDATES = (Path(__file__).resolve().parents[1] / "conf",
                    Path(__file__).resolve().parents[2] / "conf")

#: the settings an ``{"augserve": {...}}`` additional config may have
SETTINGS = frozenset({"policy", "policy_kwargs", "max_num_batched_tokens", "predictor", "slo",
                      "profile", "trace"})


def conf_dir() -> Path:
    """The directory of the project's Hydra configs (``serve.yaml``, ``policy/``, ...)."""
    for d in _CONF_CANDIDATES:
        if (d / "policy").is_dir():
            return d
    raise FileNotFoundError("augserve's Hydra configs (conf/policy/*.yaml) are neither in the "
                            f"package nor in the source tree: looked in "
                            f"{', '.join(str(d) for d in _CONF_CANDIDATES)}")


def policy_registry() -> dict[str, Path]:
    """Policy name -> its ``conf/policy/<name>.yaml``, sorted by name."""
    return {p.stem: p for p in sorted((conf_dir() / "policy").glob("*.yaml"))}


def policy_targets() -> dict[str, str]:
    """Policy name -> the ``_target_`` of its config (a class or a factory returning a policy)."""
    from omegaconf import OmegaConf

    return {n: str(OmegaConf.load(p)["_target_"]) for n, p in policy_registry().items()}


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


def _refuse_oracle(name: str, obj: Any) -> None:
    if getattr(obj, "oracle", False):
        raise ValueError(f"policy {name!r} reads request scripts (oracle); a server has none")


def _from_registry(name: str, path: Path, cfg: Mapping[str, Any]) -> functools.partial:
    """The policy factory of ``conf/policy/<name>.yaml`` (Hydra ``_partial_`` instantiation):
    ``${predictor}`` is the deployment's predictor (:func:`load_predictor` of its
    ``predictor`` setting, built by Hydra like serve.py's artifact node), ``${slo.spec}`` its
    ``slo``."""
    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    node = OmegaConf.load(path)
    node.pop("label", None)  # a table row's name (augserve.serving), not an argument
    if node.get("engine"):  # the row's engine settings: vLLM's flags, which a policy cannot set
        raise ValueError(
            f"policy {name!r}: {path} sets engine settings "
            f"{OmegaConf.to_container(node.engine)}, which a deployment cannot take from its "
            "policy; start vLLM with the matching flags (enable_prefix_caching: false is "
            "--no-enable-prefix-caching) and deploy the policy those settings go with")
    node.pop("engine", None)
    target = node.get("_target_")
    if not target:
        raise ValueError(f"policy {name!r}: {path} has no _target_")
    _refuse_oracle(name, get_object(str(target)))
    root = OmegaConf.create({
        "predictor": {"_target_": f"{__name__}.load_predictor", "spec": cfg.get("predictor")},
        "slo": {"spec": cfg.get("slo")},
        "engine": {"profile": cfg.get("profile")},  # ${tuned:...}, ${saturation:...}
        "policy": node,
    })
    try:
        OmegaConf.to_container(root.policy, resolve=True)
    except InterpolationResolutionError as e:
        raise ValueError(f"policy {name!r}: {path} interpolates something a deployment does not "
                         f"have (only ${{predictor}}, ${{slo.spec}} and ${{engine.profile}}): "
                         f"{e}") from e
    return instantiate(root.policy, _partial_=True)


def _from_qualname(qual: str, cfg: Mapping[str, Any]) -> functools.partial:
    """The factory of a ``module.Class`` (or factory function) qualname: its own defaults, the
    deployment's predictor if it takes one, the ``slo`` if it takes one (or ``**kwargs``)."""
    mod, _, attr = qual.rpartition(".")
    obj = getattr(importlib.import_module(mod), attr)
    if (isinstance(obj, type) and not issubclass(obj, Policy)) or not callable(obj):
        raise TypeError(f"{qual} is not an augserve Policy")
    _refuse_oracle(qual, obj)
    params = inspect.signature(obj).parameters
    kwargs: dict[str, Any] = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if ("slo" in params or takes_any) and cfg.get("slo") is not None:  # RLPolicy: **augserve
        kwargs["slo"] = cfg["slo"]
    if "predictor" in params:
        kwargs["predictor"] = load_predictor(cfg.get("predictor"))
    return functools.partial(obj, **kwargs)


def policy_factory(cfg: Mapping[str, Any], max_num_batched_tokens: int) -> functools.partial:
    """What :func:`make_policy` calls: the policy class (or factory) with every keyword argument
    the ``{"augserve": cfg}`` additional config gives it (see the module docstring).

    ``max_num_batched_tokens``: vLLM's per-step token cap, the policy's budget unless ``cfg``
    (``max_num_batched_tokens`` or ``policy_kwargs``) sets one.
    """
    unknown = sorted(set(cfg) - SETTINGS)
    if unknown:
        raise ValueError(f"unknown augserve setting {unknown[0]!r} in --additional-config; "
                         f"known: {', '.join(sorted(SETTINGS))}")
    name = str(cfg.get("policy") or "vllm")
    registry = policy_registry()
    if name in registry:
        base = _from_registry(name, registry[name], cfg)
    elif "." in name:
        base = _from_qualname(name, cfg)
    else:
        raise ValueError(f"unknown augserve policy {name!r}; known: {', '.join(registry)} "
                         f"({conf_dir() / 'policy'}/<name>.yaml) or a module.Class qualname")
    kwargs: dict[str, Any] = dict(cfg.get("policy_kwargs") or {})
    if "max_num_batched_tokens" in inspect.signature(base.func).parameters:
        kwargs.setdefault("max_num_batched_tokens",
                          int(cfg.get("max_num_batched_tokens") or max_num_batched_tokens))
    return functools.partial(base.func, *base.args, **{**base.keywords, **kwargs})


def make_policy(cfg: Mapping[str, Any], max_num_batched_tokens: int) -> Policy:
    """The policy an ``{"augserve": cfg}`` additional config asks for (see module docstring)."""
    policy = policy_factory(cfg, max_num_batched_tokens)()
    if not isinstance(policy, Policy):
        name = cfg.get("policy") or "vllm"
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
