"""Tuned policy settings per profile, and the config resolvers that read them.

``python experiments/tune.py`` (``docs/baselines.md``) chooses each policy's token budget (and
AugServe's own constants) by capacity on the development seeds and writes
``data/tuned/<profile>.yaml``; the policy configs read it through two OmegaConf resolvers,
registered when :mod:`augserve` is imported:

* ``${tuned:<policy>,<key>,<default>}`` — the value tuned for ``<policy>``'s ``<key>`` on the
  run's engine profile (``engine.profile``), or ``<default>`` where that profile was not tuned
  (a profile given as a path, the live engine's CPU profiles);
* ``${saturation:<profile>}`` — InferCept's token budget derived from a profile's step-time
  curve (:func:`augserve.engine.cost.saturation_tokens`; no profile: 2048, vLLM's default).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

TUNED_DIR = Path(__file__).resolve().parents[1] / "data" / "tuned"


@functools.lru_cache(maxsize=32)
def load_tuned(profile: str, tuned_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """``{policy: {key: value}}`` tuned for ``profile`` ({} if it was not tuned)."""
    path = Path(tuned_dir or TUNED_DIR) / f"{profile}.yaml"
    if "/" in profile or not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    pols = doc.get("policies")
    if not isinstance(pols, dict):
        raise ValueError(f"{path}: field 'policies' must be a mapping of policy -> settings")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in pols.items():
        tuned = (entry or {}).get("tuned")
        if not isinstance(tuned, dict):
            raise ValueError(f"{path}: policies.{name}.tuned must be a mapping of settings")
        out[str(name)] = tuned
    return out


def tuned_value(profile: str, policy: str, key: str, default: Any) -> Any:
    """The tuned ``policy``.``key`` on ``profile``, else ``default``."""
    return load_tuned(str(profile)).get(policy, {}).get(key, default)


def _tuned_resolver(policy: str, key: str, default: Any, *, _root_: Any) -> Any:
    engine = _root_.get("engine") if hasattr(_root_, "get") else None
    profile = engine.get("profile") if engine is not None and hasattr(engine, "get") else None
    if profile is None:
        return default
    return tuned_value(str(profile), policy, key, default)


def _saturation_resolver(profile: str | None) -> int:
    from augserve.engine.cost import load_profile, saturation_tokens

    if profile is None:  # a deployment without a profile: vLLM's cap is the budget anyway
        return 2048
    return saturation_tokens(load_profile(profile))


def register_resolvers() -> None:
    """Register ``tuned`` and ``saturation`` (idempotent)."""
    if not OmegaConf.has_resolver("tuned"):
        OmegaConf.register_new_resolver("tuned", _tuned_resolver)
    if not OmegaConf.has_resolver("saturation"):
        OmegaConf.register_new_resolver("saturation", _saturation_resolver)
