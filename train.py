"""Train the Stage I predictors on the tool-use datasets and write a servable artifact.

    python train.py                                   # LightGBM on all sources
    python train.py predictor=hgb                     # a baseline family as the artifact
    python train.py sources=[infercept_mix] predictor.params.num_boost_round=20
    python train.py artifact_dir=data/predictors/lgbm # refresh the artifact serve.py ships with
    python train.py agent=ppo                         # the RL Stage II policy instead (rl/)

Evaluates every method in ``eval.methods`` within datasets (group-aware 80/20 split) and across
datasets (train on the others, test on one), prints the tables, and writes ``metrics.json``,
``metrics.md`` and ``feature_importance.png`` into the Hydra output directory. The artifact
(models trained on all rows) goes to ``artifact_dir``.

The pipeline is :func:`predictors.pipeline.train_predictors`. With ``agent=<name>``
(conf/agent/) it trains that RL scheduler instead:
:func:`rl.train_agent.train_agent` writes the checkpoint to ``agent.checkpoint_dir`` and
``learning_curve.{csv,png}``, ``eval.{md,json}`` (RL vs augserve on held-out seeds) here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from augserve.loggers import Logger

log = logging.getLogger("train")


def make_logger(cfg: DictConfig) -> Logger:
    """The run's experiment logger (``logger=<name>``, conf/logger/) given the resolved config."""
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # partial: run_config holds _target_ keys (the predictor) that must not be instantiated
    return instantiate(cfg.logger, _partial_=True)(run_config=run_config)


def train_rl(cfg: DictConfig) -> float:
    """``agent=<name>``: train, save and evaluate the RL scheduler (rl/train_agent.py)."""
    from rl.train_agent import train_agent

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    logger = make_logger(cfg)
    try:
        res = train_agent(cfg.agent, out_dir, logger=logger,
                          progress=bool(cfg.get("progress", True)))
    finally:
        logger.close()
    print(f"results: {out_dir} (learning_curve.png, learning_curve.csv, eval.md, eval.json); "
          f"checkpoint: {res['train']['checkpoint']}")
    return float(next(iter(res["settings"].values()))["ratio"])


def train_stage1(cfg: DictConfig) -> float:
    """The Stage I predictors (predictors/pipeline.py); returns the within-dataset Kendall tau
    of output length of ``predictor.kind`` over all sources (the sweep objective)."""
    from predictors.pipeline import REPORT_FILES, train_predictors

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    logger = make_logger(cfg)
    try:
        res = train_predictors(cfg, out_dir, logger=logger,
                               progress=bool(cfg.get("progress", True)))
    finally:
        logger.close()
    art = res["artifact"]
    print(f"wall time {res['wall_s']:.1f} s; results: {out_dir} ({', '.join(REPORT_FILES)})"
          + (f"; artifact: {art}" if art else ""))
    return res["objective"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train_rl(cfg) if cfg.get("agent") is not None else train_stage1(cfg)


if __name__ == "__main__":
    main()
