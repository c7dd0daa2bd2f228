"""The project's own JSONL trace format: one augmented request per line (see docs/trace_format.md).

Line schema (units: seconds, tokens)::

    {"rid": str, "arrival_s": float, "prompt_tokens": int,
     "prompt_text": str | null, "aug_type": str, "metadata": {...},      # optional
     "session_id": str,                                                 # optional
     "prefix": [[str, int], ...],     # optional: shared-prefix content keys (augserve.prefix)
     "segments": [{"gen_tokens": int,
                   "call": {"kind": str, "duration_s": float, "return_tokens": int} | null},
                  ...]}

Blank lines are skipped. Every segment but the last has a call; the last has ``"call": null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from augserve.prefix import check_prefix
from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload.base import Workload
from augserve.workload.errors import WorkloadError

_TOP = {"rid", "arrival_s", "prompt_tokens", "prompt_text", "aug_type", "metadata", "session_id",
        "prefix", "segments"}
_REQUIRED = ("rid", "arrival_s", "prompt_tokens", "segments")


def _plain(x: Any) -> Any:
    """Mappings (e.g. ``MappingProxyType``) and tuples as JSON-ready dicts and lists."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def request_to_dict(r: AugRequest) -> dict[str, Any]:
    """One request as the JSON object of a trace line."""
    d: dict[str, Any] = {"rid": r.rid, "arrival_s": r.arrival_s,
                         "prompt_tokens": r.prompt_tokens}
    if r.prompt_text is not None:
        d["prompt_text"] = r.prompt_text
    d["aug_type"] = r.aug_type
    if r.metadata:
        d["metadata"] = _plain(r.metadata)
    if r.session_id is not None:
        d["session_id"] = r.session_id
    if r.prefix:
        d["prefix"] = [[k, n] for k, n in r.prefix]
    d["segments"] = [
        {"gen_tokens": s.gen_tokens,
         "call": None if s.call is None else {"kind": s.call.kind,
                                              "duration_s": s.call.duration_s,
                                              "return_tokens": s.call.return_tokens}}
        for s in r.segments
    ]
    return d


def write_trace(path: str | Path, requests: Iterable[AugRequest]) -> None:
    """Write ``requests`` to ``path``, one JSON object per line (overwrites the file)."""
    lines = [json.dumps(request_to_dict(r), ensure_ascii=False, allow_nan=False)
             for r in requests]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


class _Line:
    """Validation helpers bound to one line of one file."""

    def __init__(self, path: Path, lineno: int, rid: str | None = None) -> None:
        self.path, self.lineno, self.rid = path, lineno, rid

    def fail(self, field: str | None, reason: str) -> WorkloadError:
        where = None if self.rid is None else f"request '{self.rid}'"
        return WorkloadError(reason, file=self.path, line=self.lineno, field=field, where=where)

    def int_(self, v: Any, field: str, lo: int = 0) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(field, f"must be an integer, got {v!r}")
        if v < lo:
            raise self.fail(field, f"must be >= {lo}, got {v}")
        return v

    def float_(self, v: Any, field: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(field, f"must be a finite number, got {v!r}")
        if v < 0:
            raise self.fail(field, f"must be >= 0, got {v!r}")
        return float(v)

    def str_(self, v: Any, field: str) -> str:
        if not isinstance(v, str):
            raise self.fail(field, f"must be a string, got {type(v).__name__}")
        return v


def _parse_line(
    lp: _Line, text: str, max_model_len: int | None, kinds: Collection[str] | None
) -> AugRequest:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise lp.fail(None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(d, dict):
        raise lp.fail(None, f"must be a JSON object, got {type(d).__name__}")
    for f in _REQUIRED:
        if f not in d:
            raise lp.fail(f, "missing")
    lp.rid = lp.str_(d["rid"], "rid")
    unknown = sorted(set(d) - _TOP)
    if unknown:
        raise lp.fail(unknown[0], "unknown field")
    arrival = lp.float_(d["arrival_s"], "arrival_s")
    prompt = lp.int_(d["prompt_tokens"], "prompt_tokens", lo=1)
    if max_model_len is not None and prompt >= max_model_len:
        raise lp.fail("prompt_tokens", f"{prompt} does not fit max_model_len={max_model_len}")
    prompt_text = d.get("prompt_text")
    if prompt_text is not None:
        lp.str_(prompt_text, "prompt_text")
    aug_type = lp.str_(d.get("aug_type", "other"), "aug_type")
    meta = d.get("metadata", {})
    if not isinstance(meta, dict):
        raise lp.fail("metadata", f"must be an object, got {type(meta).__name__}")
    session = d.get("session_id")
    if session is not None:
        lp.str_(session, "session_id")
    prefix = d.get("prefix", [])
    if not isinstance(prefix, list):
        raise lp.fail("prefix", f"must be a list of [key, tokens], got {type(prefix).__name__}")
    try:
        prefix = check_prefix(prefix, prompt)
    except (ValueError, TypeError) as e:
        raise lp.fail("prefix", str(e)) from None
    raw = d["segments"]
    if not isinstance(raw, list) or not raw:
        raise lp.fail("segments", "must be a non-empty list")
    segs: list[Segment] = []
    for k, s in enumerate(raw):
        pre = f"segments[{k}]"
        if not isinstance(s, dict):
            raise lp.fail(pre, f"must be an object, got {type(s).__name__}")
        bad = sorted(set(s) - {"gen_tokens", "call"})
        if bad:
            raise lp.fail(f"{pre}.{bad[0]}", "unknown field")
        if "gen_tokens" not in s:
            raise lp.fail(f"{pre}.gen_tokens", "missing")
        gen = lp.int_(s["gen_tokens"], f"{pre}.gen_tokens", lo=1)
        c = s.get("call")
        last = k == len(raw) - 1
        if c is None:
            if not last:
                raise lp.fail(f"{pre}.call", "missing: every segment but the last makes a call")
            segs.append(Segment(gen))
            continue
        if last:
            raise lp.fail(f"{pre}.call", "the last segment cannot make a call (use null)")
        if not isinstance(c, dict):
            raise lp.fail(f"{pre}.call", f"must be an object or null, got {type(c).__name__}")
        for f in ("kind", "duration_s", "return_tokens"):
            if f not in c:
                raise lp.fail(f"{pre}.call.{f}", "missing")
        bad = sorted(set(c) - {"kind", "duration_s", "return_tokens"})
        if bad:
            raise lp.fail(f"{pre}.call.{bad[0]}", "unknown field")
        kind = lp.str_(c["kind"], f"{pre}.call.kind")
        if kinds is not None and kind not in kinds:
            raise lp.fail(f"{pre}.call.kind", f"unknown tool kind {kind!r} (allowed: "
                                              f"{sorted(kinds)})")
        dur = lp.float_(c["duration_s"], f"{pre}.call.duration_s")
        ret = lp.int_(c["return_tokens"], f"{pre}.call.return_tokens")
        segs.append(Segment(gen, ToolCall(kind, dur, ret)))
    return AugRequest(rid=lp.rid, arrival_s=arrival, prompt_tokens=prompt, segments=tuple(segs),
                      aug_type=aug_type, prompt_text=prompt_text,
                      metadata=MappingProxyType(meta), session_id=session, prefix=prefix)


def read_trace(
    path: str | Path,
    max_model_len: int | None = None,
    allowed_kinds: Collection[str] | None = None,
) -> list[AugRequest]:
    """All requests of a JSONL trace, in file order.

    Raises :class:`WorkloadError` naming file, line and field for: malformed JSON, a missing,
    unknown or wrongly typed field, negative times or token counts, a call on the last segment
    (or a missing one elsewhere), a tool kind outside ``allowed_kinds`` (when given), a
    ``prompt_tokens >= max_model_len`` (when given) and a duplicate ``rid``. Nothing is returned
    unless every line is valid. Scripts are not truncated here (see :class:`TraceWorkload`).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise WorkloadError(f"not UTF-8 text ({e})", file=p) from None
    out: list[AugRequest] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        r = _parse_line(_Line(p, lineno), line, max_model_len, allowed_kinds)
        if r.rid in seen:
            raise WorkloadError(f"duplicate rid (first on line {seen[r.rid]})", file=p,
                                line=lineno, field="rid", where=f"request '{r.rid}'")
        seen[r.rid] = lineno
        out.append(r)
    return out


class TraceWorkload(Workload):
    """Replays a JSONL trace as stored (arrival times and scripts); the seed is unused.

    With ``max_model_len`` each script is cut with :meth:`AugRequest.fit_context` so that its
    context never exceeds the model's (a prompt that does not fit is a :class:`WorkloadError`).
    """

    def __init__(
        self,
        path: str | Path,
        max_model_len: int | None = None,
        allowed_kinds: Collection[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_model_len = max_model_len
        reqs = read_trace(self.path, max_model_len, allowed_kinds)
        if max_model_len is not None:
            reqs = [r.fit_context(max_model_len) for r in reqs]
        self._requests = sorted(reqs, key=lambda r: r.arrival_s)

    def requests(self, seed: int) -> list[AugRequest]:
        return list(self._requests)
