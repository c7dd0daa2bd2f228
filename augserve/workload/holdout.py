"""Evaluation rows out of sample: the held-out rows a predictor artifact records.

``python train.py`` fits the served Stage I artifact on the training part of a group-wise split
(per dataset, a seeded ``GroupShuffleSplit`` by ``row.group``, so rows of one dialogue or
script never straddle it) and writes the held-out row ids into the artifact's ``split.json``::

    {"method": "...", "test_size": 0.2, "seed": 0, "train_rows": 7000,
     "held_out": {"api_bank": ["row id", ...], ...}}

Workloads that replay dataset rows (``predictors.workload``, ``infercept_json``) take
``holdout=<artifact dir>`` and draw only held-out rows of the datasets the split covers (a
dataset the artifact never saw is used whole), so a policy is never scored on rows its
predictor was fit on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

SPLIT_FILE = "split.json"


def load_holdout(artifact_dir: str | Path) -> dict[str, frozenset[str]]:
    """Held-out row ids per dataset of the artifact at ``artifact_dir``."""
    p = Path(artifact_dir) / SPLIT_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} not found: the predictor artifact records no train/test split (retrain it "
            f"with python train.py, or draw all rows with workload.holdout=null)")
    try:
        d = json.loads(p.read_text())
        held = d["held_out"]
        if not isinstance(held, dict) or not all(isinstance(v, list) for v in held.values()):
            raise TypeError("held_out must map each dataset to a list of row ids")
        return {str(k): frozenset(str(x) for x in v) for k, v in held.items()}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: field 'held_out': unreadable split ({e})") from None


def usable(source: str, rid: str, holdout: Mapping[str, frozenset[str]] | None) -> bool:
    """Whether row ``rid`` of ``source`` may be drawn for evaluation."""
    if holdout is None or source not in holdout:
        return True
    return rid in holdout[source]
