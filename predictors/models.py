"""Stage I models: one model per target, several model families behind one interface.

Targets (natural units; each family handles its own transform):

* ``output``: total output tokens at arrival (trained on log1p tokens);
* ``calls``: number of tool calls at arrival (Poisson);
* ``tool_s``: duration of one tool call (s), one sample per call with the runtime features at that
  call (trained on log s; only rows with ``meta["tool_s"]``, i.e. infercept_mix);
* ``rank``: ordering score by output length, higher = longer (LightGBM: lambdarank over per-source
  chunks, relevance = quantile bin of output length; other families: their ``output`` model);
* ``remaining``: tokens still to generate after ``k`` returned calls, one sample per prefix
  ``k = 0..num_calls`` (trained on log1p tokens);
* ``remaining_calls``: calls still to make after ``k`` returned calls (Poisson).

Families: ``lgbm`` (LightGBM ``Booster``), ``hgb`` (HistGradientBoostingRegressor), ``linear``
(Ridge, standardized features, NaN -> 0), ``mean`` (per-source mean of the transformed target),
``prompt_len`` (isotonic in log prompt length). ``oracle`` is handled by the evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from predictors.features import FeatureInput, FeatureSpec, build_matrix, tool_seconds
from predictors.lgbm_fast import FastBooster
from predictors.schema import ToolUseRow

TARGETS: tuple[str, ...] = ("output", "calls", "tool_s", "rank", "remaining", "remaining_calls")
#: how each target is transformed for regression: log1p tokens, log seconds, raw counts
TRANSFORM = {"output": "log1p", "calls": "count", "tool_s": "log", "rank": "log1p",
             "remaining": "log1p", "remaining_calls": "count"}
FAMILIES: tuple[str, ...] = ("lgbm", "hgb", "linear", "mean", "prompt_len")
SERVABLE: tuple[str, ...] = ("lgbm", "hgb", "linear")
MIN_TOOL_S = 1e-5  # floor (s) before taking the log of a tool duration

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "lgbm": {"num_boost_round": 150, "learning_rate": 0.06, "num_leaves": 15,
             "min_data_in_leaf": 30, "feature_fraction": 0.8, "lambda_l2": 1.0, "max_bin": 63,
             "rank_bins": 16, "rank_group_size": 64},
    "hgb": {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15,
            "min_samples_leaf": 20, "l2_regularization": 1.0},
    "linear": {"alpha": 10.0},
    "mean": {},
    "prompt_len": {},
}


def _fwd(kind: str, y: np.ndarray) -> np.ndarray:
    if kind == "log1p":
        return np.log1p(np.maximum(y, 0.0))
    if kind == "log":
        return np.log(np.maximum(y, MIN_TOOL_S))
    return y.astype(np.float64)


def _inv(kind: str, z: np.ndarray) -> np.ndarray:
    # minimum(maximum()) is clip (NaN propagates the same) without clip's per-call overhead
    if kind == "log1p":
        return np.expm1(np.minimum(np.maximum(z, 0.0), 20.0))
    if kind == "log":
        return np.exp(np.minimum(np.maximum(z, -20.0), 20.0))
    return np.maximum(z, 0.0)


# --------------------------------------------------------------------------------------------
# training samples
# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class TargetData:
    """Samples of one target: features, natural-unit target, row index, source index."""

    X: np.ndarray
    y: np.ndarray
    row: np.ndarray  # index into the row list each sample came from
    src: np.ndarray  # source of the sample's row (index into spec.sources + ["other"])
    excluded: int  # rows dropped because this target is unknown for them


def build_samples(rows: Sequence[ToolUseRow], spec: FeatureSpec) -> dict[str, TargetData]:
    """All training samples of all targets (features built once, with one builder)."""
    inputs: list[FeatureInput] = []
    ridx: list[int] = []
    kidx: list[int] = []
    for i, r in enumerate(rows):
        for k in range(r.num_calls + 1):
            inputs.append(FeatureInput.from_row(r, at_call=k))
            ridx.append(i)
            kidx.append(k)
    X_all = build_matrix(spec, inputs)
    ridx_a, kidx_a = np.asarray(ridx), np.asarray(kidx)
    src_all = spec.source_index(X_all)
    out: dict[str, TargetData] = {}

    def pick(name: str, mask: np.ndarray, y: np.ndarray, excluded: int) -> None:
        out[name] = TargetData(X_all[mask], y.astype(np.float64), ridx_a[mask], src_all[mask],
                               excluded)

    at0 = kidx_a == 0
    tot = np.array([np.nan if r.output_tokens is None else r.output_tokens for r in rows], float)
    known = ~np.isnan(tot[ridx_a])
    n_unknown = int(np.isnan(tot).sum())
    pick("output", at0 & known, tot[ridx_a][at0 & known], n_unknown)
    pick("rank", at0 & known, tot[ridx_a][at0 & known], n_unknown)
    ncalls = np.array([r.num_calls for r in rows], float)
    pick("calls", at0, ncalls[ridx_a][at0], 0)
    # remaining after k calls: needs segments k.. known
    rem = np.full(len(inputs), np.nan)
    for j, (i, k) in enumerate(zip(ridx, kidx, strict=True)):
        segs = rows[i].segment_tokens[k:]
        if all(s is not None for s in segs):
            rem[j] = float(sum(segs))  # type: ignore[arg-type]
    ok = ~np.isnan(rem)
    n_rem_rows = len(rows) - len(set(ridx_a[ok].tolist()))
    pick("remaining", ok, rem[ok], n_rem_rows)
    pick("remaining_calls", np.ones(len(inputs), bool), ncalls[ridx_a] - kidx_a, 0)
    # tool duration of call k (features: state after k returned calls)
    ts = [tool_seconds(r) for r in rows]
    tool = np.full(len(inputs), np.nan)
    for j, (i, k) in enumerate(zip(ridx, kidx, strict=True)):
        t = ts[i]
        if t is not None and k < len(t):
            tool[j] = t[k]
    ok = ~np.isnan(tool)
    n_tool_rows = sum(1 for r, t in zip(rows, ts, strict=True) if t is None and r.num_calls > 0)
    pick("tool_s", ok, tool[ok], n_tool_rows)
    return out


def subset(d: TargetData, row_mask: np.ndarray) -> TargetData:
    """Samples whose row is selected by the boolean ``row_mask`` (over rows)."""
    m = row_mask[d.row]
    return TargetData(d.X[m], d.y[m], d.row[m], d.src[m], d.excluded)


# --------------------------------------------------------------------------------------------
# model families
# --------------------------------------------------------------------------------------------
class TargetModel:
    """One fitted model of one target. ``predict`` returns natural units (or a rank score)."""

    family = ""
    suffix = ".joblib"

    def __init__(self, target: str, spec: FeatureSpec, params: Mapping[str, Any],
                 seed: int = 0, num_threads: int = 2) -> None:
        self.target = target
        self.transform = TRANSFORM[target]
        self.spec = spec
        self.params = dict(params)
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, d: TargetData) -> TargetModel:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        import joblib

        joblib.dump(self._state(), path)

    def load(self, path: Path) -> TargetModel:
        import joblib

        self._set_state(joblib.load(path))
        return self

    def _state(self) -> Any:
        raise NotImplementedError

    def _set_state(self, state: Any) -> None:
        raise NotImplementedError

    def importance(self) -> dict[str, float] | None:
        return None


class LGBMModel(TargetModel):
    family = "lgbm"
    suffix = ".txt"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.booster: Any = None
        self._fast: FastBooster | None = None

    def _lgb_params(self, objective: str) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items()
             if k not in ("num_boost_round", "rank_bins", "rank_group_size")}
        p.update(objective=objective, deterministic=True, force_col_wise=True,
                 num_threads=self.num_threads, seed=self.seed, verbose=-1)
        return p

    def fit(self, d: TargetData) -> LGBMModel:
        import lightgbm as lgb

        rounds = int(self.params.get("num_boost_round", 200))
        if self.target == "rank":
            X, labels, groups = _rank_groups(d, int(self.params.get("rank_bins", 16)),
                                             int(self.params.get("rank_group_size", 64)),
                                             self.seed)
            ds = lgb.Dataset(X, labels, group=groups, free_raw_data=True)
            params = self._lgb_params("lambdarank")
            params["label_gain"] = list(range(int(labels.max()) + 1 if len(labels) else 1))
        else:
            obj = "poisson" if self.transform == "count" else "regression"
            ds = lgb.Dataset(d.X, _fwd(self.transform, d.y), free_raw_data=True)
            params = self._lgb_params(obj)
        self.booster = lgb.train(params, ds, num_boost_round=rounds)
        self._fast = FastBooster(self.booster)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self._fast.predict(X, num_threads=self.num_threads)
        if self.target == "rank" or self.transform == "count":
            return np.asarray(z, dtype=np.float64)  # poisson: already the mean count
        return _inv(self.transform, z)

    def save(self, path: Path) -> None:
        self.booster.save_model(str(path))

    def load(self, path: Path) -> LGBMModel:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=str(path))
        self._fast = FastBooster(self.booster)
        return self

    def importance(self) -> dict[str, float]:
        gain = self.booster.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(self.spec.feature_names, gain, strict=True)}


def _rank_groups(d: TargetData, bins: int, group_size: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Reorder samples into per-source chunks; relevance = quantile bin (higher = longer)."""
    z = np.log1p(d.y)
    bins = max(2, min(bins, 31))
    edges = np.unique(np.quantile(z, np.linspace(0, 1, bins + 1)[1:-1])) if len(z) else []
    labels = np.searchsorted(edges, z, side="right").astype(np.int32)
    rng = np.random.default_rng(seed)
    order: list[np.ndarray] = []
    groups: list[int] = []
    for s in np.unique(d.src):
        idx = rng.permutation(np.flatnonzero(d.src == s))
        for c in range(0, len(idx), group_size):
            chunk = idx[c:c + group_size]
            order.append(chunk)
            groups.append(len(chunk))
    o = np.concatenate(order) if order else np.zeros(0, np.int64)
    return d.X[o], labels[o], groups


class HGBModel(TargetModel):
    family = "hgb"

    def fit(self, d: TargetData) -> HGBModel:
        from sklearn.ensemble import HistGradientBoostingRegressor

        loss = "poisson" if self.transform == "count" else "squared_error"
        self.model = HistGradientBoostingRegressor(loss=loss, random_state=self.seed,
                                                   early_stopping=False, **self.params)
        # NaN -> -1 (features are >= 0): sklearn's binning fails on an all-NaN column
        self.model.fit(np.nan_to_num(d.X, nan=-1.0), _fwd(self.transform, d.y))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.model.predict(np.nan_to_num(X, nan=-1.0))
        return z if self.target == "rank" else _inv(self.transform, z)

    def _state(self) -> Any:
        return self.model

    def _set_state(self, state: Any) -> None:
        self.model = state


class LinearModel(TargetModel):
    family = "linear"

    def fit(self, d: TargetData) -> LinearModel:
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), Ridge(**self.params))
        z = _fwd("log1p" if self.transform == "count" else self.transform, d.y)
        self.model.fit(np.nan_to_num(d.X), z)
        # a linear model extrapolates without bound: clip to the training range of the target
        self.zlo, self.zhi = (float(z.min()), float(z.max())) if len(z) else (0.0, 0.0)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = np.clip(self.model.predict(np.nan_to_num(X)), self.zlo, self.zhi)
        if self.target == "rank":
            return z
        return _inv("log1p" if self.transform == "count" else self.transform, z)

    def _state(self) -> Any:
        return {"model": self.model, "zlo": self.zlo, "zhi": self.zhi}

    def _set_state(self, state: Any) -> None:
        self.model, self.zlo, self.zhi = state["model"], state["zlo"], state["zhi"]

    def importance(self) -> dict[str, float]:
        coef = np.abs(self.model[-1].coef_)
        return {n: float(c) for n, c in zip(self.spec.feature_names, coef, strict=True)}


class MeanModel(TargetModel):
    """Per-source mean of the transformed target (global mean for unseen sources)."""

    family = "mean"

    def fit(self, d: TargetData) -> MeanModel:
        z = _fwd(self.transform, d.y)
        n = len(self.spec.sources) + 1
        self.glob = float(z.mean()) if len(z) else 0.0
        self.by_src = np.full(n, self.glob)
        for s in range(n):
            m = d.src == s
            if m.any():
                self.by_src[s] = z[m].mean()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.by_src[self.spec.source_index(X)]
        return z if self.target == "rank" else _inv(self.transform, z)

    def _state(self) -> Any:
        return {"glob": self.glob, "by_src": self.by_src}

    def _set_state(self, state: Any) -> None:
        self.glob, self.by_src = state["glob"], state["by_src"]


class PromptLenModel(TargetModel):
    """Isotonic (monotone) in log prompt tokens."""

    family = "prompt_len"

    def fit(self, d: TargetData) -> PromptLenModel:
        from sklearn.isotonic import IsotonicRegression

        self.model = IsotonicRegression(increasing="auto", out_of_bounds="clip")
        with warnings.catch_warnings():  # "increasing may be suspect": fine for a baseline
            warnings.simplefilter("ignore", UserWarning)
            self.model.fit(d.X[:, 0], _fwd(self.transform, d.y))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.model.predict(X[:, 0])
        if self.target == "rank":
            return X[:, 0].astype(np.float64) * (1.0 if self.model.increasing_ else -1.0)
        return _inv(self.transform, z)

    def _state(self) -> Any:
        return self.model

    def _set_state(self, state: Any) -> None:
        self.model = state


MODEL_CLASSES: dict[str, type[TargetModel]] = {
    "lgbm": LGBMModel, "hgb": HGBModel, "linear": LinearModel, "mean": MeanModel,
    "prompt_len": PromptLenModel,
}


def model_params(family: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``family`` overridden by ``params`` (unknown keys -> ValueError)."""
    base = dict(DEFAULT_PARAMS[family])
    for k, v in (params or {}).items():
        if family != "lgbm" and k not in base:
            raise ValueError(f"unknown {family} parameter {k!r}; known: {sorted(base)}")
        base[k] = v
    return base


def fit_family(family: str, data: Mapping[str, TargetData], spec: FeatureSpec,
               params: Mapping[str, Any] | None = None, seed: int = 0,
               num_threads: int = 2) -> dict[str, TargetModel]:
    """Fit every target that has samples; targets without samples are left out."""
    if family not in MODEL_CLASSES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(MODEL_CLASSES)}")
    p = model_params(family, params)
    cls = MODEL_CLASSES[family]
    return {t: cls(t, spec, p, seed, num_threads).fit(d)
            for t, d in data.items() if t in TARGETS and len(d.y) >= 2}
