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
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augserve.predictor import Prediction
from augserve.workload.holdout import SPLIT_FILE
from predictors.features import (
    ArrivalInputs,
    FeatureInput,
    FeatureSpec,
    arrival_inputs,
    arrival_key,
    build_matrix,
    runtime_inputs,
    set_runtime_columns,
)
from predictors.models import MODEL_CLASSES, SERVABLE, TARGETS, TargetModel

FORMAT = "augserve-predictor"
VERSION = 1
REQUIRED = ("output", "calls", "rank", "remaining", "remaining_calls")
DEFAULT_TOOL_S = 1.0  # s, served when the artifact has no tool-duration model


class LGBMPredictor:
    """Stage I predictor over an artifact's models (any servable family; LightGBM by default).

    Implements ``augserve.predictor.Predictor``: batched, one feature matrix per call.
    Units: tokens, calls, seconds; ``rank_score`` higher = longer.

    Serving path: a request's arrival columns (prompt-text hashing, tools, source) and its
    arrival-time predictions are computed once, on first sight, and kept, keyed by what they
    depend on (:func:`predictors.features.arrival_key`: the text as far as the columns read it,
    so a hit is always the right row and a long prompt is not kept whole).
    Re-predictions only fill in the runtime columns; their results are kept too, keyed by the
    arrival key and the runtime inputs (workloads drawn from a pool of scripts repeat them).
    Each cache holds at most ``cache_size`` entries, least recently used dropped first;
    :meth:`reset` empties them (policies call it at the start of a run, so every feature cost
    falls inside the run). Predictions are the values of :meth:`predict_inputs` on
    :func:`~predictors.features.build_matrix` rows (tests check bit equality).
    """

    def __init__(self, spec: FeatureSpec, models: Mapping[str, TargetModel],
                 kind: str = "lgbm", path: str | None = None, cache_size: int = 16384) -> None:
        missing = [t for t in REQUIRED if t not in models]
        if missing:
            raise ValueError(f"predictor {path or kind}: models missing for {missing}")
        if cache_size < 1:
            raise ValueError(f"cache_size={cache_size} must be >= 1")
        self.spec = spec
        self.models = dict(models)
        self.kind = kind
        self.path = path
        self.cache_size = int(cache_size)
        self._cache: OrderedDict = OrderedDict()  # arrival key -> (row, Stage I predictions)
        self._remaining: OrderedDict = OrderedDict()  # (arrival, runtime) -> (out, calls, tool)
        self._tool: OrderedDict = OrderedDict()  # (arrival, runtime) -> tool_s

    def reset(self) -> None:
        """Forget every cached request."""
        for c in (self._cache, self._remaining, self._tool):
            c.clear()

    # ------------------------------------------------------------------ plain path
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
        return Prediction(output_tokens=np.maximum(out, 1.0), num_calls=np.maximum(calls, 0.0),
                          tool_s=self._tool_s(X), rank_score=np.asarray(rank, dtype=np.float64))

    def _tool_s(self, X: np.ndarray) -> np.ndarray:
        m = self.models.get("tool_s")
        return m.predict(X) if m is not None else np.full(len(X), DEFAULT_TOOL_S)

    def predict_inputs(self, inputs: Sequence[FeatureInput], remaining: bool = False
                       ) -> Prediction:
        """Predictions for feature inputs (``remaining=False`` ignores their runtime fields)."""
        if not remaining:
            inputs = [f.at_arrival() for f in inputs]
        return self._predict(build_matrix(self.spec, inputs), remaining)

    # ------------------------------------------------------------------ serving path
    def _cached(self, cache: OrderedDict, keys: list, compute: Callable[[list], list]) -> list:
        """Values of ``keys``: hits from ``cache``, misses computed in one batch by
        ``compute``; least recently used entries beyond ``cache_size`` are dropped."""
        if len(keys) == 1:  # the common case: one request enters, or makes a call
            v = cache.get(keys[0])
            if v is not None:
                cache.move_to_end(keys[0])
                return [v]
        for k in keys:
            if k in cache:
                cache.move_to_end(k)
        miss = list(dict.fromkeys(k for k in keys if k not in cache))
        if miss:
            for k, v in zip(miss, compute(miss), strict=True):
                cache[k] = v
            keep = max(self.cache_size, len(set(keys)))  # never this batch's own keys
            while len(cache) > keep:
                cache.popitem(last=False)
        return [cache[k] for k in keys]

    def _arrival(self, inputs: list[ArrivalInputs]) -> list[tuple[np.ndarray, tuple[float, ...]]]:
        """(arrival feature row, arrival predictions) of requests with these arrival inputs."""
        keys = [arrival_key(self.spec, a) for a in inputs]
        by_key = dict(zip(keys, inputs, strict=True))

        def compute(miss: list) -> list:
            X = build_matrix(self.spec, [FeatureInput(*by_key[k]) for k in miss])
            p = self._predict(X, remaining=False)
            return [(X[j].copy(), (float(p.output_tokens[j]), float(p.num_calls[j]),
                                   float(p.tool_s[j]), float(p.rank_score[j])))
                    for j in range(len(miss))]

        return self._cached(self._cache, keys, compute)

    def _runtime(self, views: Sequence[Any], cache: OrderedDict,
                 compute: Callable[[np.ndarray], list]) -> list:
        """Cached ``compute(X)`` values of the views' current feature rows, keyed by their
        arrival key and runtime inputs; the rows are built only for the misses."""
        inputs = [(arrival_inputs(v), runtime_inputs(v)) for v in views]
        keys = [(arrival_key(self.spec, a), r) for a, r in inputs]
        by_key = dict(zip(keys, inputs, strict=True))

        def rows(miss: list) -> list:
            got = [by_key[k] for k in miss]
            X = np.array([row for row, _ in self._arrival([a for a, _ in got])])
            set_runtime_columns(self.spec, X, [r for _, r in got])
            return compute(X)

        return self._cached(cache, keys, rows)

    def predict(self, views: Sequence[Any]) -> Prediction:
        """Arrival-time predictions (runtime fields of the views are ignored)."""
        a = np.array([p for _, p in self._arrival([arrival_inputs(v) for v in views])],
                     dtype=np.float64).reshape(len(views), 4)
        return Prediction(output_tokens=a[:, 0], num_calls=a[:, 1], tool_s=a[:, 2],
                          rank_score=a[:, 3])

    def predict_remaining(self, views: Sequence[Any]) -> Prediction:
        """What is left: tokens and calls still to come, next call's duration (s)."""
        def compute(X: np.ndarray) -> list:
            m = self.models
            return list(zip(m["remaining"].predict(X).tolist(),
                            m["remaining_calls"].predict(X).tolist(),
                            self._tool_s(X).tolist(), strict=True))

        a = np.array(self._runtime(views, self._remaining, compute),
                     dtype=np.float64).reshape(len(views), 3)
        out = a[:, 0]
        return Prediction(output_tokens=np.maximum(out, 1.0),
                          num_calls=np.maximum(a[:, 1], 0.0), tool_s=a[:, 2],
                          rank_score=np.log1p(out))

    def predict_tool_s(self, views: Sequence[Any]) -> np.ndarray:
        """``predict_remaining(views).tool_s`` alone (s): what a KV decision at a call needs."""
        return np.array(self._runtime(views, self._tool, lambda X: self._tool_s(X).tolist()),
                        dtype=np.float64)


def save_artifact(path: str | Path, kind: str, spec: FeatureSpec,
                  models: Mapping[str, TargetModel], config: Mapping[str, Any] | None = None,
                  metrics: Mapping[str, Any] | None = None,
                  split: Mapping[str, Any] | None = None) -> Path:
    """Write an artifact directory (replacing one that is there). Returns its path. ``split``:
    the train/test split the models were fit under (``split.json``,
    :mod:`augserve.workload.holdout`)."""
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
    if split is not None:
        (tmp / SPLIT_FILE).write_text(json.dumps(split, indent=0) + "\n")
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
