"""Arrival processes: Poisson, gamma with burstiness (``vllm bench serve``), Azure trace replay.

All return sorted arrival times (s) in ``[0, duration_s)``.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from augserve.workload.base import ArrivalProcess
from augserve.workload.errors import WorkloadError


def _renewal(rng: np.random.Generator, duration_s: float, mean_gap: float, draw) -> np.ndarray:
    """Cumulative sums of i.i.d. gaps from ``draw(size)`` until ``duration_s`` is passed."""
    if duration_s <= 0:
        return np.empty(0)
    chunk = max(16, int(1.2 * duration_s / mean_gap) + 16)
    parts: list[np.ndarray] = []
    t0 = 0.0
    while True:
        ts = t0 + np.cumsum(draw(chunk))
        parts.append(ts)
        if ts[-1] >= duration_s:
            break
        t0 = float(ts[-1])
    times = np.concatenate(parts)
    return times[times < duration_s]


class Poisson(ArrivalProcess):
    """Poisson arrivals at ``rate`` requests/s (exponential gaps; the first arrival after one gap).

    This is how InferCept's harness spaces requests (``rng.exponential(1 / qps)``).
    """

    def __init__(self, rate: float) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
        self.rate = float(rate)

    def times(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        scale = 1.0 / self.rate
        return _renewal(rng, duration_s, scale, lambda n: rng.exponential(scale, n))


class Gamma(ArrivalProcess):
    """Gamma-distributed gaps with ``vllm bench serve --burstiness`` semantics.

    Gap ~ Gamma(shape=burstiness, scale=1/(rate*burstiness)): mean gap 1/rate s, coefficient of
    variation 1/sqrt(burstiness). ``burstiness=1`` is Poisson; lower is burstier (0.25 gives
    CV 2), higher is more regular.
    """

    def __init__(self, rate: float, burstiness: float = 1.0) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
        if not burstiness > 0 or not math.isfinite(burstiness):
            raise ValueError(f"burstiness must be > 0, got {burstiness}")
        self.rate = float(rate)
        self.burstiness = float(burstiness)

    def times(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        shape = self.burstiness
        scale = 1.0 / (self.rate * self.burstiness)
        return _renewal(rng, duration_s, 1.0 / self.rate, lambda n: rng.gamma(shape, scale, n))


_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def read_azure_timestamps(path: str | Path) -> np.ndarray:
    """Seconds since the first row of an Azure LLM inference trace CSV (sorted).

    Expects a header with ``TIMESTAMP`` (``YYYY-MM-DD HH:MM:SS.fffffff``); ``ContextTokens`` and
    ``GeneratedTokens``, when present, must be non-negative integers. A bad row raises
    :class:`WorkloadError` with file, line and field; nothing is half-loaded.
    """
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise WorkloadError("empty file", file=p, line=1) from None
        header = [h.strip() for h in header]
        if "TIMESTAMP" not in header:
            raise WorkloadError("missing column", file=p, line=1, field="TIMESTAMP")
        its = header.index("TIMESTAMP")
        int_cols = [(header.index(c), c) for c in ("ContextTokens", "GeneratedTokens")
                    if c in header]
        stamps: list[datetime] = []
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise WorkloadError(f"expected {len(header)} columns, got {len(row)}", file=p,
                                    line=line, field=header[min(len(row), len(header) - 1)])
            ts = row[its].strip()
            try:
                stamps.append(datetime.strptime(ts[:26], _TS_FORMAT))
            except ValueError:
                raise WorkloadError(f"not a timestamp 'YYYY-MM-DD HH:MM:SS.fff': {ts!r}",
                                    file=p, line=line, field="TIMESTAMP") from None
            for i, c in int_cols:
                v = row[i].strip()
                if not v.isdigit():
                    raise WorkloadError(f"must be a non-negative integer, got {v!r}", file=p,
                                        line=line, field=c)
    if not stamps:
        raise WorkloadError("no rows", file=p, line=2)
    t0 = min(stamps)
    return np.sort(np.array([(s - t0).total_seconds() for s in stamps]))


class AzureReplay(ArrivalProcess):
    """Replays the ``TIMESTAMP`` column of an Azure LLM inference trace CSV (Splitwise, 2023).

    The trace's arrivals at or after ``start_s`` (seconds into the trace) are shifted so the
    first of them arrives at 0. With ``rate`` (requests/s) the offsets are scaled by
    ``native_rate / rate``, where ``native_rate = (N - 1) / (last - first)`` over the whole file,
    so the replay's mean rate is ``rate``; without it, the trace is replayed at its own pace. The
    replay stops where the trace ends even if ``duration_s`` is longer (no wrap-around). The rng
    is unused: the same file gives the same times.
    """

    def __init__(self, path: str | Path, rate: float | None = None, start_s: float = 0.0) -> None:
        if rate is not None and (not rate > 0 or not math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
        if start_s < 0:
            raise ValueError(f"start_s must be >= 0, got {start_s}")
        self.path = Path(path)
        self.rate = rate
        self.start_s = float(start_s)
        self.offsets = read_azure_timestamps(self.path)
        span = float(self.offsets[-1] - self.offsets[0])
        if span <= 0 and rate is not None:
            raise WorkloadError("cannot rescale: all timestamps are equal", file=self.path,
                                field="TIMESTAMP")
        self.native_rate = (len(self.offsets) - 1) / span if span > 0 else math.inf
        self.scale = 1.0 if rate is None else self.native_rate / rate

    def times(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        ts = self.offsets[self.offsets >= self.start_s]
        if ts.size == 0:
            return np.empty(0)
        ts = (ts - ts[0]) * self.scale
        return ts[ts < duration_s]
