"""Serving metrics for augmented requests, with the definitions of ``vllm bench serve``.

The standard metrics follow ``calculate_metrics`` in vLLM's ``vllm/benchmarks/serve.py``
(formerly ``benchmarks/benchmark_serving.py``):

- TTFT = first output token time − arrival (vLLM: ``output.ttft``);
- E2EL = finish − arrival (vLLM: ``output.latency``);
- TPOT = (E2EL − TTFT) / (output_tokens − 1), only for ``output_tokens > 1``: vLLM leaves
  1-token requests out of the TPOT statistics and counts their TPOT as 0 when checking the
  goodput SLO; so do we;
- ITL = gaps between consecutive output tokens;
- goodput = completed requests meeting every SLO (``metric <= threshold``, inclusive, as vLLM's
  ``s >= r``) / benchmark duration;
- statistics: mean, median, std (population, ``np.std``), percentiles with ``np.percentile``'s
  default linear interpolation, over completed requests only (vLLM skips failed requests).

Augmented additions (an augmented request pauses in tool calls between output segments):

- ``tool_time`` = Σ (return − start) over the request's tool calls;
- ``e2el_no_tool`` = E2EL − tool_time;
- normalized latency (InferCept) = (finish − arrival − tool_time) / output_tokens;
- resume latency of call k = first token of segment k+1 − return time of call k;
- ``itl`` here excludes the gaps that span a tool call (last token before a call → first token
  after it). vLLM would include them (it sees every gap of the stream), but such a gap is mostly
  tool time; the part the server is responsible for is reported as resume latency instead. So
  for a request with calls, ``itl`` holds ``output_tokens − 1 − num_calls_resumed`` gaps.

Units: records and the per-request table are in seconds (``*_s``); the summary's latency
statistics and SLO thresholds are in milliseconds (``*_ms``), like vLLM.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from augserve.records import RequestRecord
from augserve.slo import SLOSpec, meets, parse_slo, slo_values, worst_resume_s

if TYPE_CHECKING:
    from augserve.engine.base import RunResult

#: Latency metrics summarized with mean/median/std/p90/p99 (all in ms).
LATENCY_METRICS: tuple[str, ...] = (
    "ttft",
    "tpot",
    "itl",
    "e2el",
    "e2el_no_tool",
    "norm_latency",
    "resume",
)
PERCENTILES: tuple[int, ...] = (90, 99)

CSV_COLUMNS: tuple[str, ...] = (
    "rid",
    "aug_type",
    "arrival_s",
    "finished",
    "output_tokens",
    "num_calls",
    "ttft_s",
    "tpot_s",
    "e2el_s",
    "tool_time_s",
    "e2el_no_tool_s",
    "norm_latency_s",
    "mean_resume_s",
    "preemptions",
    "recomputed_tokens",
    "prefix_hit_tokens",
    "meets_slo",
)


# ------------------------------------------------------------------------- per-request values


def itl_gaps(rec: RequestRecord) -> np.ndarray:
    """Inter-token gaps (s) within segments: the gaps spanning a tool call are left out."""
    t = np.asarray(rec.token_s, dtype=float)
    if t.shape[0] < 2:
        return np.empty(0)
    gaps = np.diff(t)
    cut = [s - 1 for s in rec.seg_start_idx if 0 < s < t.shape[0]]
    if cut:
        gaps = np.delete(gaps, cut)
    return gaps


def resume_latencies(rec: RequestRecord) -> np.ndarray:
    """Resume latency (s) of each returned call whose next segment has emitted a token
    (:attr:`RequestRecord.resume_s`)."""
    return np.asarray(rec.resume_s, dtype=float)


class _Columns:
    """Per-request metrics of a list of records as numpy arrays (seconds; NaN = undefined)."""

    def __init__(self, records: Sequence[RequestRecord]) -> None:
        m = len(records)
        self.records = records
        self.finished = np.fromiter((r.finished for r in records), bool, m)
        self.arrival = np.fromiter((r.arrival_s for r in records), float, m)
        self.finish = np.fromiter((r.finish_s for r in records), float, m)
        self.ntok = np.fromiter((r.token_s.shape[0] for r in records), np.int64, m)
        self.prompt = np.fromiter((r.prompt_tokens for r in records), np.int64, m)
        self.tool = np.fromiter((r.tool_time_s for r in records), float, m)
        self.preempt = np.fromiter((r.preemptions for r in records), np.int64, m)
        self.recomp = np.fromiter((r.recomputed_tokens for r in records), np.int64, m)
        fin = self.finished
        with np.errstate(invalid="ignore", divide="ignore"):
            # the record's own per-request values (augserve.slo judges the same ones)
            self.ttft = np.fromiter((r.ttft_s for r in records), float, m)
            self.e2el = np.fromiter((r.e2el_s for r in records), float, m)
            self.tpot = np.where(
                self.ntok > 1, (self.e2el - self.ttft) / np.maximum(self.ntok - 1, 1), math.nan
            )
            self.e2el_no_tool = self.e2el - self.tool
            self.norm = np.where(self.ntok > 0, self.e2el_no_tool / self.ntok, math.nan)
        # Resume latencies: per request, and one flat array over finished requests.
        self.resume_lists = [resume_latencies(r) for r in records]
        self.mean_resume = np.fromiter(
            (x.mean() if x.size else math.nan for x in self.resume_lists), float, m
        )
        done_resumes = [x for x, f in zip(self.resume_lists, fin, strict=True) if f and x.size]
        self.resume_finished = np.concatenate(done_resumes) if done_resumes else np.empty(0)

    def itl_finished(self) -> np.ndarray:
        """ITL gaps (s) of finished requests in one array: one concatenate + one diff, then
        drop the gaps between requests and the gaps spanning a tool call."""
        idx = np.flatnonzero(self.finished & (self.ntok > 1))
        if idx.size == 0:
            return np.empty(0)
        recs = self.records
        flat = np.concatenate([recs[i].token_s for i in idx]).astype(float, copy=False)
        gaps = np.diff(flat)
        lens = self.ntok[idx]
        ends = np.cumsum(lens)
        keep = np.ones(gaps.shape[0], dtype=bool)
        keep[ends[:-1] - 1] = False  # last token of request i → first token of request i+1
        starts = ends - lens
        cut = [
            starts[j] + s - 1
            for j, i in enumerate(idx)
            for s in recs[i].seg_start_idx
            if 0 < s < lens[j]
        ]
        if cut:
            keep[np.asarray(cut, dtype=np.int64)] = False
        return gaps[keep]

    def meets(self, slo: Mapping[str, float]) -> np.ndarray:
        """Which requests meet every SLO (:func:`augserve.slo.meets`)."""
        worst = np.fromiter((worst_resume_s(r) for r in self.records), float, len(self.records))
        values = slo_values(self.ttft, self.e2el, self.tool, self.ntok, worst)
        return meets(values, slo) & self.finished


def _num(x: float) -> float | None:
    """A float for a table/JSON cell: NaN/inf → None."""
    x = float(x)
    return x if math.isfinite(x) else None


def per_request_table(
    records: Sequence[RequestRecord], slo: SLOSpec = None
) -> list[dict[str, Any]]:
    """One row per request (columns :data:`CSV_COLUMNS`, times in s, undefined = ``None``).

    ``meets_slo`` is True when the request finished and meets every SLO in ``slo`` (ms).
    """
    thr = parse_slo(slo)
    c = _Columns(records)
    meets = c.meets(thr)
    rows = []
    for i, r in enumerate(records):
        rows.append(
            {
                "rid": r.rid,
                "aug_type": r.aug_type,
                "arrival_s": float(r.arrival_s),
                "finished": bool(r.finished),
                "output_tokens": int(c.ntok[i]),
                "num_calls": int(r.num_calls),
                "ttft_s": _num(c.ttft[i]),
                "tpot_s": _num(c.tpot[i]),
                "e2el_s": _num(c.e2el[i]),
                "tool_time_s": float(c.tool[i]),
                "e2el_no_tool_s": _num(c.e2el_no_tool[i]),
                "norm_latency_s": _num(c.norm[i]),
                "mean_resume_s": _num(c.mean_resume[i]),
                "preemptions": int(r.preemptions),
                "recomputed_tokens": int(r.recomputed_tokens),
                "prefix_hit_tokens": int(r.prefix_hit_tokens),
                "meets_slo": bool(meets[i]),
            }
        )
    return rows


def write_requests_csv(
    path: str | Path, records: Sequence[RequestRecord], slo: SLOSpec = None
) -> Path:
    """Write :func:`per_request_table` as CSV (header :data:`CSV_COLUMNS`; empty = undefined)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        w.writerows(per_request_table(records, slo))
    return path


# ------------------------------------------------------------------------------------ summary


def _stats_ms(name: str, values_s: np.ndarray, out: dict[str, Any]) -> None:
    """mean/median/std/p90/p99 of ``values_s`` (s) in ms under vLLM's key names; NaN if empty."""
    v = values_s[~np.isnan(values_s)] * 1000.0
    keys = ["mean", "median", "std", *(f"p{p}" for p in PERCENTILES)]
    if v.size == 0:
        for k in keys:
            out[f"{k}_{name}_ms"] = math.nan
        return
    out[f"mean_{name}_ms"] = float(v.mean())
    q = np.percentile(v, [50, *PERCENTILES])
    out[f"median_{name}_ms"] = float(q[0])
    out[f"std_{name}_ms"] = float(v.std())
    for p, val in zip(PERCENTILES, q[1:], strict=True):
        out[f"p{p}_{name}_ms"] = float(val)


def summarize(
    result: RunResult, slo: SLOSpec = None, duration_s: float | None = None
) -> dict[str, Any]:
    """Summarize a run like ``vllm bench serve`` (latencies in ms, throughputs per s).

    ``duration_s`` defaults to vLLM's benchmark duration: from the start of the run (clock 0,
    before the first arrival) to the last finish, or ``result.end_s`` if some requests are
    unfinished. Latency statistics cover completed requests only (as vLLM). Goodput counts
    completed requests meeting every SLO; ``slo_attainment`` is that count over ALL requests
    (unfinished ones fail). With no SLO every completed request counts as good.
    """
    thr = parse_slo(slo)
    records = result.records
    c = _Columns(records)
    fin = c.finished
    n = len(records)
    completed = int(fin.sum())
    if duration_s is None:
        if n and completed == n:
            duration_s = float(np.max(c.finish))
        else:
            duration_s = float(result.end_s)
    dur = float(duration_s)

    def per_s(x: float) -> float:
        return x / dur if dur > 0 else math.nan

    good = int(c.meets(thr).sum())
    total_in = int(c.prompt[fin].sum())
    total_out = int(c.ntok[fin].sum())
    s: dict[str, Any] = {
        "num_requests": n,
        "completed": completed,
        "unfinished": n - completed,
        "duration": dur,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": per_s(completed),
        "output_throughput": per_s(total_out),
        "total_token_throughput": per_s(total_in + total_out),
        "goodput": per_s(good),
        "effective_throughput": per_s(good),
        "good_requests": good,
        "slo_attainment": good / n if n else math.nan,
        "slo": dict(thr),
        "num_calls": int(sum(r.num_calls for r in records)),
        "preemptions": int(c.preempt.sum()),
        "recomputed_tokens": int(c.recomp.sum()),
        # what a policy gave up on: requests it turned away (counted in unfinished) and
        # preserved KV freed at its time-to-live, or before it under memory pressure
        "rejected": int(sum(r.rejected is not None for r in records)),
        "kv_ttl_expired": int(sum(r.kv_expired for r in records)),
        "kv_pins_reclaimed": int(sum(r.kv_reclaimed for r in records)),
    }
    per_metric = {
        "ttft": c.ttft[fin],
        "tpot": c.tpot[fin],
        "itl": c.itl_finished(),
        "e2el": c.e2el[fin],
        "e2el_no_tool": c.e2el_no_tool[fin],
        "norm_latency": c.norm[fin],
        "resume": c.resume_finished,
    }
    for name in LATENCY_METRICS:
        _stats_ms(name, per_metric[name], s)
    for k, v in result.stats.items():
        s[f"engine_{k}"] = v
    return s


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Iterable) and not isinstance(x, str | bytes):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_summary_json(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write a summary as strict JSON (NaN/inf → null, numpy → Python, other objects → str)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False, default=str) + "\n")
    return path
