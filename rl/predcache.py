"""Cached, cheaper predictions with the same values: the env's hot path.

:class:`CachedPredictor` wraps a :class:`~augserve.predictor.Predictor` and returns exactly what
it would (tests check bit equality), faster:

* **Stage I** (``predict``): arrival-time predictions depend only on what is known at arrival, so
  they are computed once per request — for a whole episode in one batch (:meth:`prefetch`), or
  on first use — and served from a cache.
* **Stage II** (``predict_remaining``), for artifact predictors (:class:`LGBMPredictor`): the
  feature row of a request is its arrival row (hashed prompt text etc., cached) with the five
  runtime columns filled in, instead of rebuilding it (text hashing) per call; LightGBM models are
  evaluated through LightGBM's single-row fast C API for small batches (µs instead of ~25 µs of
  Python overhead per model call). :meth:`tool_s_remaining` evaluates the tool-duration model only.

Other predictors get the Stage I cache and are called as they are for Stage II.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from augserve.predictor import Prediction, Predictor
from augserve.request import AugRequest, RequestView

#: batches up to this size go through the single-row fast path, larger ones through predict()
_FAST_MAX_ROWS = 32


def arrival_view(req: AugRequest) -> RequestView:
    """A view of ``req`` at its arrival (nothing generated, no call made)."""
    from predictors.synthetic import FakeRuntime

    return RequestView(FakeRuntime(req, 0))


class _FastBooster:
    """A LightGBM booster evaluated row by row through ``LGBM_BoosterPredictForMatSingleRowFast``
    (same values as ``Booster.predict``); falls back to ``predict`` where that API is missing."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self.nf = int(booster.num_feature())
        self._cfg: ctypes.c_void_p | None = None
        self._ok = True

    def __getstate__(self) -> dict:
        return {"booster": self.booster, "nf": self.nf, "_cfg": None, "_ok": self._ok}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _init(self) -> bool:
        try:
            from lightgbm.basic import _LIB, _c_str, _safe_call

            cfg = ctypes.c_void_p()
            _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                self.booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1),
                ctypes.c_int(0), ctypes.c_int32(self.nf), _c_str("num_threads=1"),
                ctypes.byref(cfg)))
        except Exception:  # an older/newer lightgbm without this API: use predict()
            self._ok = False
            return False
        self._lib = _LIB
        self._cfg = cfg
        self._row = np.zeros(self.nf, dtype=np.float32)
        self._out = np.zeros(1, dtype=np.float64)
        self._len = ctypes.c_int64()
        self._args = (cfg, self._row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._len),
                      self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
        return True

    def __del__(self) -> None:
        if getattr(self, "_cfg", None) is not None:
            try:
                self._lib.LGBM_FastConfigFree(self._cfg)
            except Exception:
                pass

    def predict(self, X: np.ndarray) -> np.ndarray:
        n = len(X)
        if n > _FAST_MAX_ROWS or not self._ok or (self._cfg is None and not self._init()):
            return self.booster.predict(X, num_threads=1)
        f = self._lib.LGBM_BoosterPredictForMatSingleRowFast
        row, out, args = self._row, self._out, self._args
        z = np.empty(n, dtype=np.float64)
        for i in range(n):
            row[:] = X[i]
            if f(*args) != 0:
                raise RuntimeError("LightGBM single-row prediction failed")
            z[i] = out[0]
        return z


class CachedPredictor:
    """A :class:`Predictor` with the same outputs as ``base``, cached (module docstring)."""

    def __init__(self, base: Predictor) -> None:
        self.base = base
        self._stage1: dict[str, tuple[float, float, float, float]] = {}
        self._rows: dict[str, np.ndarray] = {}  # rid -> arrival feature row (artifacts only)
        self._fast: dict[str, Any] = {}
        self._models = None
        spec, models = getattr(base, "spec", None), getattr(base, "models", None)
        if spec is not None and isinstance(models, dict) and hasattr(base, "_predict"):
            from predictors.features import NUMERIC, RUNTIME

            self._spec = spec
            self._models = models
            n_src, n_aug = len(spec.sources) + 1, len(spec.aug_types) + 1
            self._c_rt = len(NUMERIC) + n_src + n_aug
            self._n_rt = len(RUNTIME)
            for t, m in models.items():
                booster = getattr(m, "booster", None)
                if getattr(m, "family", "") == "lgbm" and booster is not None:
                    self._fast[t] = _FastBooster(booster)

    def clear(self) -> None:
        """Forget cached requests (rids may mean other requests in the next run)."""
        self._stage1.clear()
        self._rows.clear()

    # ------------------------------------------------------------------ Stage I
    def prefetch(self, requests: Sequence[AugRequest]) -> None:
        """Arrival-time predictions (and feature rows) for ``requests``, in one batch."""
        self._fill([arrival_view(r) for r in requests if r.rid not in self._stage1])

    def _fill(self, views: Sequence[Any]) -> None:
        if not views:
            return
        if self._models is not None:  # one feature matrix for both (as base.predict builds it)
            from predictors.features import FeatureInput, build_matrix

            X = build_matrix(self._spec, [FeatureInput.from_view(v).at_arrival() for v in views])
            p = self.base._predict(X, remaining=False)
            for j, v in enumerate(views):
                self._rows[v.rid] = X[j]
        else:
            p = self.base.predict(views)
        for j, v in enumerate(views):
            self._stage1[v.rid] = (float(p.output_tokens[j]), float(p.num_calls[j]),
                                   float(p.tool_s[j]), float(p.rank_score[j]))

    def predict(self, views: Sequence[RequestView]) -> Prediction:
        miss = [v for v in views if v.rid not in self._stage1]
        if miss:
            self._fill(list({v.rid: v for v in miss}.values()))
        rows = [self._stage1[v.rid] for v in views]
        a = np.array(rows, dtype=np.float64).reshape(len(views), 4)
        return Prediction(output_tokens=a[:, 0], num_calls=a[:, 1], tool_s=a[:, 2],
                          rank_score=a[:, 3])

    # ------------------------------------------------------------------ Stage II
    def _matrix(self, views: Sequence[RequestView]) -> np.ndarray:
        """The feature matrix ``build_matrix`` would give for the views' runtime inputs."""
        miss = [v for v in views if v.rid not in self._rows]
        if miss:
            self._fill(list({v.rid: v for v in miss}.values()))
        n = len(views)
        X = np.stack([self._rows[v.rid] for v in views]) if n else np.zeros((0, 0), np.float32)
        # the runtime columns, computed as predictors.features.build_matrix does
        num = np.empty((n, 9), dtype=np.float64)
        for i, v in enumerate(views):
            rets = v.observed_return_tokens
            calls = len(rets)
            elapsed = float(sum(v.observed_tool_s))
            num[i] = (0, 0, 0, 0, int(v.generated_tokens), calls, int(rets[-1]) if rets else 0,
                      elapsed, elapsed / calls if calls > 0 else 0.0)
        logs = np.log1p(np.maximum(num, 0.0))
        logs[np.isnan(num)] = np.nan
        c = self._c_rt
        X[:, c] = logs[:, 4]
        X[:, c + 1] = num[:, 5]
        X[:, c + 2] = logs[:, 6]
        X[:, c + 3] = logs[:, 7]
        X[:, c + 4] = logs[:, 8]
        return X

    def _model(self, target: str, X: np.ndarray) -> np.ndarray:
        """``models[target].predict(X)`` (same values)."""
        m = self._models[target]
        fb = self._fast.get(target)
        if fb is None:
            return m.predict(X)
        from predictors.models import _inv

        z = fb.predict(X)
        if m.target == "rank" or m.transform == "count":
            return np.asarray(z, dtype=np.float64)
        return _inv(m.transform, z)

    def predict_remaining(self, views: Sequence[RequestView]) -> Prediction:
        if self._models is None:
            return self.base.predict_remaining(views)
        X = self._matrix(views)
        out = self._model("remaining", X)
        calls = self._model("remaining_calls", X)
        return Prediction(output_tokens=np.maximum(out, 1.0), num_calls=np.maximum(calls, 0.0),
                          tool_s=self._tool_s(X), rank_score=np.asarray(np.log1p(out),
                                                                       dtype=np.float64))

    def _tool_s(self, X: np.ndarray) -> np.ndarray:
        from predictors.artifact import DEFAULT_TOOL_S

        if "tool_s" in self._models:
            return self._model("tool_s", X)
        return np.full(len(X), DEFAULT_TOOL_S)

    def tool_s_remaining(self, views: Sequence[RequestView]) -> np.ndarray:
        """``predict_remaining(views).tool_s``, evaluating the tool-duration model only."""
        if self._models is None:
            return np.asarray(self.base.predict_remaining(views).tool_s)
        return self._tool_s(self._matrix(views))
