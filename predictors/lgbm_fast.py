"""LightGBM boosters evaluated row by row through LightGBM's single-row fast C API.

``Booster.predict`` costs ~50-100 µs of Python and setup per call whatever the batch size; a
scheduler predicts one to a few requests at a time. ``LGBM_BoosterPredictForMatSingleRowFast``
(LightGBM's C API, the same predictor core) takes a few µs per row and returns the same values
(tests check bit equality). Not thread-safe: one row buffer per booster (policies run on one
thread; vLLM's scheduler too).

Compiled trees were measured instead and not adopted (the shipped artifact, real feature rows,
one core): lleaves 1.3 is faster (about 1.7 µs a row at batch 64 against ~9 µs for
``Booster.predict``) but not bit-identical (1,093 of 1,200 rows differ by up to 4.4e-15, a
different summation order), and an ulp can flip a tie in a policy's queue; tl2cgen 1.0 (Treelite
4) is bit-identical but no faster at batch 1-64 (58-130 µs a call at batch 1). The single-row
API is bit-identical and takes 6-16 µs a row.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

#: batches up to this size go row by row; larger ones through ``Booster.predict``
FAST_MAX_ROWS = 32


class FastBooster:
    """``booster.predict(X)`` for float32 ``X``, row by row for small batches."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self.nf = int(booster.num_feature())
        self._cfg: ctypes.c_void_p | None = None
        self._ok = True

    def __getstate__(self) -> dict:  # the C config is per process: rebuilt after unpickling
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
        except Exception:  # a lightgbm without this API: Booster.predict
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
            except Exception:  # interpreter shutdown
                pass

    def predict(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        n = len(X)
        if (n > FAST_MAX_ROWS or X.dtype != np.float32 or not self._ok
                or (self._cfg is None and not self._init())):
            return self.booster.predict(X, num_threads=num_threads)
        f = self._lib.LGBM_BoosterPredictForMatSingleRowFast
        row, out, args = self._row, self._out, self._args
        z = np.empty(n, dtype=np.float64)
        for i in range(n):
            row[:] = X[i]
            if f(*args) != 0:
                raise RuntimeError("LightGBM single-row prediction failed")
            z[i] = out[0]
        return z
