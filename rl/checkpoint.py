"""RL checkpoints: a directory that ``RLPolicy`` (``serve.py policy=rl_ckpt``) loads by path.

Layout::

    checkpoint.json     {"format": "augserve-rl", "version": 1, "net": NetConfig,
                         "obs": {"k", "budget_bins", "item_features", "engine_features"},
                         "top_m": ..., "policy": {AugServe kwargs it was trained with}, ...}
    model.safetensors   the ScorerNet weights (safetensors; no pickle)

:func:`load_checkpoint` checks everything before building the network: a missing directory or
file, another format or version, observation features that differ from :mod:`rl.obs` (names or
order), a K or budget bins other than expected, unreadable or mismatching weights — each is a
``FileNotFoundError`` / ``ValueError`` naming the path and what differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.net import NetConfig, ScorerNet
from rl.obs import ENGINE_FEATURES, ITEM_FEATURES, ObsSpec

FORMAT = "augserve-rl"
VERSION = 1
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (eval mode) and what it was trained for."""

    net: ScorerNet
    spec: ObsSpec
    top_m: int | None
    policy: dict[str, Any] = field(default_factory=dict)  # AugServe kwargs of training
    meta: dict[str, Any] = field(default_factory=dict)  # the whole checkpoint.json


def save_checkpoint(path: str | Path, net: ScorerNet, spec: ObsSpec, top_m: int | None,
                    policy: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``net`` and its metadata to directory ``path`` (created); returns the path."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "net": net.cfg.to_dict(),
        "obs": {"k": spec.k, "budget_bins": list(spec.budget_bins),
                "item_features": list(ITEM_FEATURES), "engine_features": list(ENGINE_FEATURES)},
        "top_m": top_m,
        "policy": dict(policy or {}),
        **dict(extra or {}),
    }
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": FORMAT,
                                                         "version": str(VERSION)})
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return out


def _diff(what: str, have: Any, want: Any) -> str:
    return f"{what}: checkpoint has {have}, expected {want}"


def load_checkpoint(path: str | Path, expect: ObsSpec | None = None) -> Checkpoint:
    """Load the checkpoint directory ``path``; ``expect`` (optional) must match its K and bins.

    Observation features must equal :data:`rl.obs.ITEM_FEATURES` / ``ENGINE_FEATURES``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"RL checkpoint {root}: no such directory (train one with "
                                "`python train.py agent=ppo`, or use the shipped data/rl/ppo)")
    for name in (META_FILE, WEIGHTS_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(f"RL checkpoint {root}: {name} is missing")
    try:
        meta = json.loads((root / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"RL checkpoint {root}: {META_FILE} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"RL checkpoint {root}: {META_FILE} is not an {FORMAT} checkpoint")
    if meta.get("version") != VERSION:
        raise ValueError(f"RL checkpoint {root}: " + _diff("version", meta.get("version"),
                                                           VERSION))
    try:
        obs = meta["obs"]
        spec = ObsSpec(k=int(obs["k"]), budget_bins=tuple(int(b) for b in obs["budget_bins"]))
        cfg = NetConfig(**meta["net"])
        items, engine = list(obs["item_features"]), list(obs["engine_features"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"RL checkpoint {root}: {META_FILE} lacks or garbles {e}") from e
    problems = []
    if items != list(ITEM_FEATURES):
        problems.append(_diff("item features", items, list(ITEM_FEATURES)))
    if engine != list(ENGINE_FEATURES):
        problems.append(_diff("engine features", engine, list(ENGINE_FEATURES)))
    if cfg.f != len(ITEM_FEATURES) or cfg.g != len(ENGINE_FEATURES):
        problems.append(_diff("net input widths (f, g)", (cfg.f, cfg.g),
                              (len(ITEM_FEATURES), len(ENGINE_FEATURES))))
    if cfg.n_bins != len(spec.budget_bins):
        problems.append(_diff("budget head width", cfg.n_bins, len(spec.budget_bins)))
    if expect is not None:
        if expect.k != spec.k:
            problems.append(_diff("K (candidates)", spec.k, expect.k))
        if tuple(expect.budget_bins) != tuple(spec.budget_bins):
            problems.append(_diff("budget bins", list(spec.budget_bins),
                                  list(expect.budget_bins)))
    if problems:
        raise ValueError(f"RL checkpoint {root} is incompatible: " + "; ".join(problems))
    try:
        state = load_file(str(root / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"RL checkpoint {root}: {WEIGHTS_FILE} is unreadable ({e})") from e
    net = ScorerNet(cfg)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"RL checkpoint {root}: weights do not fit the net config "
                         f"{cfg.to_dict()} ({str(e).splitlines()[0]})") from e
    net.eval()
    top_m = meta.get("top_m")
    return Checkpoint(net=net, spec=spec, top_m=None if top_m is None else int(top_m),
                      policy=dict(meta.get("policy") or {}), meta=meta)
