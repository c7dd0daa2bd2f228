"""Service-level objectives: one definition for metrics, policies and the RL reward.

An SLO is ``{metric: threshold_ms}``; a request meets it when it finished and every metric is
``<=`` its threshold (inclusive, as vLLM's ``--goodput``; an undefined value fails). Metrics, in
seconds: ``ttft`` (first token - arrival), ``tpot`` ((E2EL - TTFT) / (tokens - 1); 0 for a request
of at most one token, as vLLM), ``e2el`` (finish - arrival), ``e2el_no_tool`` (E2EL - time in
tools), ``norm`` (E2EL without tools per output token) and ``resume`` (the worst resume latency
of the request's tool calls: the first token after a return - the return, a turn's TTFT; 0 for
a request without calls).

A request is judged from its :class:`~augserve.records.RequestRecord` alone
(:func:`record_meets`), by the metrics and the RL reward alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from augserve.records import RequestRecord

#: SLO keys: vLLM's ``--goodput`` keys (ttft, tpot, e2el) plus augserve's norm, e2el_no_tool and
#: the per-turn resume. Thresholds are in ms (``norm``: ms per output token).
SLO_KEYS: tuple[str, ...] = ("ttft", "tpot", "e2el", "norm", "e2el_no_tool", "resume")

SLOSpec = str | Sequence[str] | Mapping[str, float] | None


def parse_slo(spec: SLOSpec) -> dict[str, float]:
    """Parse an SLO into ``{metric: threshold_ms}``.

    Accepts vLLM's ``--goodput`` form ``"ttft:1000 tpot:50 e2el:20000"`` (space or comma
    separated), a list of ``"key:value"`` strings, a mapping, or ``None``/``""`` (no SLO).
    Keys: ``ttft``, ``tpot``, ``e2el``, ``e2el_no_tool``, ``resume`` (ms) and ``norm`` (ms per
    output token). Raises ``ValueError`` naming the key on an unknown key or a non-numeric or
    non-positive value.
    """
    if spec is None:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(spec, Mapping):
        pairs = [(str(k), v) for k, v in spec.items()]
    else:
        items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
        for item in items:
            key, sep, value = str(item).partition(":")
            if not sep:
                raise ValueError(f"SLO item {item!r}: expected 'key:value' (value in ms)")
            pairs.append((key.strip(), value.strip()))
    out: dict[str, float] = {}
    for key, value in pairs:
        if key not in SLO_KEYS:
            raise ValueError(f"SLO key {key!r} unknown; expected one of {', '.join(SLO_KEYS)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"SLO {key!r}: value {value!r} is not a number (ms)") from None
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"SLO {key!r}: value {value!r} must be a positive number (ms)")
        out[key] = v
    return out


def slo_values(ttft_s: Any, e2el_s: Any, tool_s: Any, tokens: Any,
               resume_max_s: Any = 0.0) -> dict[str, Any]:
    """Every SLO metric (s; ``norm`` s per token) from a request's TTFT, E2EL, time in tools
    (s), output tokens and worst resume latency (s); numpy arrays (one entry per request) or
    scalars. E2EL is NaN for an unfinished request."""
    ntok = np.asarray(tokens)
    with np.errstate(invalid="ignore", divide="ignore"):
        no_tool = e2el_s - tool_s
        return {
            "ttft": ttft_s,
            "tpot": np.where(ntok > 1, (e2el_s - ttft_s) / np.maximum(ntok - 1, 1), 0.0),
            "e2el": e2el_s,
            "e2el_no_tool": no_tool,
            "norm": np.where(ntok > 0, no_tool / np.maximum(ntok, 1), math.nan),
            "resume": resume_max_s,
        }


def worst_resume_s(rec: RequestRecord) -> float:
    """The longest resume latency of ``rec`` (s); 0 without calls, NaN if a returned call's
    next segment has no token yet."""
    lat = rec.resume_s
    if len(lat) < len(rec.tool_return_s):
        return math.nan
    return max(lat, default=0.0)


def record_values(rec: RequestRecord) -> dict[str, Any]:
    """Every SLO metric of one record (its per-turn fields; valid mid-run). Output tokens: the
    script's, which a finished request produced exactly (both engines check)."""
    return slo_values(rec.ttft_s, rec.e2el_s, rec.tool_time_s, rec.expected_output_tokens,
                      worst_resume_s(rec))


def record_meets(rec: RequestRecord, slo: Mapping[str, float]) -> bool:
    """Whether ``rec`` finished meeting every metric of ``slo`` (parsed, ms)."""
    return bool(rec.finished and meets(record_values(rec), slo))


def meets(values: Mapping[str, Any], slo: Mapping[str, float]) -> Any:
    """Whether every metric in ``slo`` (parsed, ms) is within its threshold (NaN fails); an
    array for array ``values``, a numpy bool for scalars."""
    ok = np.True_
    with np.errstate(invalid="ignore"):
        for key, thr_ms in slo.items():
            ok = ok & (values[key] <= thr_ms / 1000.0)
    return ok
