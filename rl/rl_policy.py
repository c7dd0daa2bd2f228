"""The trained Stage II network behind augserve's policy interface (``serve.py policy=rl_ckpt``).

:class:`RLPolicy` is AugServe's queue (:class:`rl.policy.LearnedStage2`) whose decisions come
from a checkpoint (:mod:`rl.checkpoint`), run greedily: the ranking's first ``top_m`` slots by
descending network score, the rest in AugServe's order (the same split the top-m Plackett–Luce
policy was trained with; with ``top_m`` = K this is plain "scores = logits"), and the arg-max
budget bin. K, the budget bins and the AugServe settings it was trained with come from the
checkpoint; keyword arguments override the AugServe settings (e.g. ``slo``). Inference runs
on one torch thread by default (``torch_threads``; it sets torch's process-wide thread count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from augserve.predictor import Predictor
from rl.checkpoint import load_checkpoint
from rl.distributions import greedy_scores
from rl.net import obs_to_tensors
from rl.obs import ObsSpec
from rl.policy import LearnedStage2

#: the shipped Stage I artifact, used when no predictor is configured
DEFAULT_PREDICTOR = "data/predictors/lgbm"
ROOT = Path(__file__).resolve().parents[1]


def resolve(path: str | Path) -> Path:
    """``path`` as given if it exists (relative to the working directory), else relative to
    the repository root if it exists there (e.g. the shipped data/), else as given."""
    p = Path(path)
    if p.exists() or p.is_absolute() or not (ROOT / p).exists():
        return p
    return ROOT / p


class RLPolicy(LearnedStage2):
    """Greedy decisions of a trained :class:`rl.net.ScorerNet` (see the module docstring)."""

    name = "rl"

    def __init__(self, checkpoint: str | Path, predictor: Predictor | None = None,
                 k: int | None = None, budget_bins: list[int] | None = None,
                 torch_threads: int | None = 1, **augserve: Any) -> None:
        if torch_threads:  # a ~30k-parameter net: threads only add overhead (and stall on a
            torch.set_num_threads(int(torch_threads))  # busy machine); process-wide setting
        expect = None
        if k is not None or budget_bins is not None:
            base = ObsSpec()
            expect = ObsSpec(k=int(k) if k is not None else base.k,
                             budget_bins=tuple(budget_bins) if budget_bins else base.budget_bins)
        ck = load_checkpoint(resolve(checkpoint), expect)
        kwargs = {**ck.policy, **augserve}
        super().__init__(predictor, k=ck.spec.k, budget_bins=ck.spec.budget_bins, **kwargs)
        self.checkpoint = str(checkpoint)
        self.net = ck.net
        self.top_m = ck.top_m

    def decide(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        items, mask, engine = obs_to_tensors(obs)
        with torch.inference_mode():
            logits, blogits = self.net.act(items, mask, engine)
        return (greedy_scores(logits[0].numpy(), obs["mask"], self.top_m),
                int(blogits[0].argmax()))


def make_rl_policy(checkpoint: str, predictor: Predictor | None = None,
                   slo: str | dict | None = None, default_predictor: str = DEFAULT_PREDICTOR,
                   **augserve_kwargs: Any) -> RLPolicy:
    """Hydra factory (conf/policy/rl_ckpt.yaml). Without a predictor (``predictor=`` not given
    on the command line) it loads the Stage I artifact at ``default_predictor``."""
    if predictor is None:
        from predictors.artifact import load_predictor

        predictor = load_predictor(str(resolve(default_predictor)))
    if slo is not None:
        augserve_kwargs["slo"] = slo
    return RLPolicy(checkpoint, predictor, **augserve_kwargs)
