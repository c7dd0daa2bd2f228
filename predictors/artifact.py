"""Predictor artifacts: a directory that ``serve.py`` loads by path.

Layout::

    artifact.json       {"format": "augserve-predictor", "version": 1, "kind": ..., "models": {...}}
    feature_spec.json   the FeatureSpec
    config.yaml         the resolved train config
    metrics.json        evaluation results
    models/<target>.txt (LightGBM) or models/<target>.joblib (scikit-learn)

:func:`load_predictor` checks everything before building the predictor: a missing directory or
file, a kind or version mismatch is a ``FileNotFoundError``/``ValueError`` naming the path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augserve.predictor import Prediction
from predictors.features import FeatureInput, FeatureSpec, build_matrix
from predictors.models import MODEL_CLASSES, SERVABLE, TARGETS, TargetModel

FORMAT = "augserve-predictor"
VERSION = 1
REQUIRED = ("output", "calls", "rank", "remaining", "remaining_calls")
DEFAULT_TOOL_S = 1.0  # s, served when the artifact has no tool-duration model


class LGBMPredictor:
    """Stage I predictor over an artifact's models (any servable family; LightGBM by default).

    Implements ``augserve.predictor.Predictor``: batched, one feature matrix per call.
    Units: tokens, calls, seconds; ``rank_score`` higher = longer.
    """

    def __init__(self, spec: FeatureSpec, models: Mapping[str, TargetModel],
                 kind: str = "lgbm", path: str | None = None) -> None:
        missing = [t for t in REQUIRED if t not in models]
        if missing:
            raise ValueError(f"predictor {path or kind}: models missing for {missing}")
        self.spec = spec
        self.models = dict(models)
        self.kind = kind
        self.path = path

    def _predict(self, X: np.ndarray, remaining: bool) -> Prediction:
        m = self.models
        if remaining:
            out = m["remaining"].predict(X)
            calls = m["remaining_calls"].predict(X)
            rank = np.log1p(out)
        else:
            out = m["output"].predict(X)
            calls = m["calls"].predict(X)
            rank = m["rank"].predict(X)
        tool = m["tool_s"].predict(X) if "tool_s" in m else np.full(len(X), DEFAULT_TOOL_S)
        return Prediction(output_tokens=np.maximum(out, 1.0), num_calls=np.maximum(calls, 0.0),
                          tool_s=tool, rank_score=np.asarray(rank, dtype=np.float64))

    def predict_inputs(self, inputs: Sequence[FeatureInput], remaining: bool = False
                       ) -> Prediction:
        """Predictions for feature inputs (``remaining=False`` ignores their runtime fields)."""
        if not remaining:
            inputs = [f.at_arrival() for f in inputs]
        return self._predict(build_matrix(self.spec, inputs), remaining)

    def predict(self, views: Sequence[Any]) -> Prediction:
        """Arrival-time predictions (runtime fields of the views are ignored)."""
        return self.predict_inputs([FeatureInput.from_view(v) for v in views], False)

    def predict_remaining(self, views: Sequence[Any]) -> Prediction:
        """What is left: tokens and calls still to come, next call's duration (s)."""
        return self.predict_inputs([FeatureInput.from_view(v) for v in views], True)


def save_artifact(path: str | Path, kind: str, spec: FeatureSpec,
                  models: Mapping[str, TargetModel], config: Mapping[str, Any] | None = None,
                  metrics: Mapping[str, Any] | None = None) -> Path:
    """Write an artifact directory (replacing one that is there). Returns its path."""
    root = Path(path)
    tmp = root.with_name(root.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "models").mkdir(parents=True)
    files: dict[str, str] = {}
    for t, m in models.items():
        if m.family != kind:
            raise ValueError(f"model {t} is {m.family}, artifact kind is {kind}")
        rel = f"models/{t}{m.suffix}"
        m.save(tmp / rel)
        files[t] = rel
    meta = {"format": FORMAT, "version": VERSION, "kind": kind, "models": files}
    (tmp / "artifact.json").write_text(json.dumps(meta, indent=1) + "\n")
    (tmp / "feature_spec.json").write_text(spec.to_json() + "\n")
    if config is not None:
        import yaml

        (tmp / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    if metrics is not None:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def load_predictor(path: str, kind: str | None = None, num_threads: int = 1,
                   **_: Any) -> LGBMPredictor:
    """Load the artifact at ``path``; ``kind`` (if given) must match its kind.

    Extra keyword arguments (e.g. the Hydra config's ``params``) are ignored.
    """
    if kind == "oracle":
        raise ValueError(
            f"predictor kind 'oracle' is evaluation-only (it reads the true values); it cannot "
            f"be served (path={path})")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"predictor artifact {root}: directory not found "
                                f"(train one with: python train.py artifact_dir={root})")
    meta_p = root / "artifact.json"
    if not meta_p.is_file():
        raise FileNotFoundError(f"predictor artifact {root}: artifact.json missing")
    try:
        meta = json.loads(meta_p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"predictor artifact {meta_p}: not valid JSON ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"predictor artifact {meta_p}: format {meta.get('format')!r} "
                         f"is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ValueError(f"predictor artifact {meta_p}: version {meta.get('version')!r}, this "
                         f"code reads version {VERSION}; retrain it")
    akind = meta.get("kind")
    if kind is not None and akind != kind:
        raise ValueError(f"predictor artifact {root}: kind {akind!r}, expected {kind!r}")
    if akind not in SERVABLE:
        raise ValueError(f"predictor artifact {root}: kind {akind!r} cannot be served "
                         f"(servable: {', '.join(SERVABLE)})")
    spec_p = root / "feature_spec.json"
    if not spec_p.is_file():
        raise FileNotFoundError(f"predictor artifact {root}: feature_spec.json missing")
    try:
        spec = FeatureSpec.from_json(spec_p.read_text())
    except (ValueError, TypeError) as e:
        raise ValueError(f"predictor artifact {spec_p}: {e}") from e
    files: dict[str, str] = meta.get("models") or {}
    unknown = sorted(set(files) - set(TARGETS))
    if unknown:
        raise ValueError(f"predictor artifact {meta_p}: unknown targets {unknown}")
    for t in REQUIRED:
        if t not in files:
            raise ValueError(f"predictor artifact {meta_p}: no model for target {t!r}")
    for rel in files.values():
        if not (root / rel).is_file():
            raise FileNotFoundError(f"predictor artifact {root}: model file {rel} missing")
    cls = MODEL_CLASSES[akind]
    models: dict[str, TargetModel] = {}
    for t, rel in files.items():
        try:
            models[t] = cls(t, spec, {}, 0, num_threads).load(root / rel)
        except Exception as e:  # a corrupt model file: say which
            raise ValueError(f"predictor artifact {root / rel}: cannot load ({e})") from e
    return LGBMPredictor(spec, models, kind=akind, path=str(root))
