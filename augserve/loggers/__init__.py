"""Experiment trackers behind one small interface (``log_summary``, ``log_images``, ``close``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class Logger(Protocol):
    """What runs tell an experiment tracker."""

    def log_summary(self, policy: str, summary: Mapping[str, Any]) -> None: ...

    def log_images(self, images: Mapping[str, str | Path]) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """No tracker (``logger=none``): runs still write their files."""

    def __init__(self, run_config: Mapping[str, Any] | None = None) -> None:
        pass

    def log_summary(self, policy: str, summary: Mapping[str, Any]) -> None:
        pass

    def log_images(self, images: Mapping[str, str | Path]) -> None:
        pass

    def close(self) -> None:
        pass


#: the logger of calls that are given none
NULL_LOGGER = NullLogger()


class WandbLogger:
    """Logs summaries (per policy) and figures to W&B; offline by default, no network needed."""

    def __init__(self, run_config: Mapping[str, Any] | None = None, project: str = "augserve",
                 mode: str = "offline", name: str | None = None) -> None:
        try:
            import wandb
        except ImportError as e:  # the extra is optional
            raise ImportError("logger=wandb needs wandb: pip install -e '.[wandb]'") from e
        os.environ.setdefault("WANDB_MODE", mode)
        self._wandb = wandb
        self.run = wandb.init(project=project, config=dict(run_config or {}), name=name,
                              mode=os.environ["WANDB_MODE"])

    def log_summary(self, policy: str, summary: Mapping[str, Any]) -> None:
        nums = {f"{policy}/{k}": v for k, v in summary.items() if isinstance(v, int | float)}
        self.run.log(nums)

    def log_images(self, images: Mapping[str, str | Path]) -> None:
        self.run.log({k: self._wandb.Image(str(p)) for k, p in images.items()})

    def close(self) -> None:
        self.run.finish()

#: the name configs saved before NullLogger use (e.g. data/predictors/lgbm/config.yaml)
none_logger = NullLogger
