"""Loader for the InferCept / LAMPS JSON workload format (``{request_id: [segment, ...]}``).

Each segment has ``prompt_tokens`` (int) or ``prompt`` (text), ``completion_tokens`` (int) or
``completion`` (text) and, if it makes a tool call, ``api_time`` (s) and ``api_token_length``
(int) or ``api_token`` (text, the tool's return). The rules follow InferCept's own harness
(``benchmarks/final_tput_bench_real.py``):

* segment 0's prompt is the user prompt; later segments' prompt fields are the running context
  and are ignored;
* a segment makes a call when ``api_time`` or the returned length is nonzero (``api_time == 0``
  with a nonzero return is still a call; both zero is no call);
* a call on the last segment (TTS, Image, VE and some Chatbot requests) is kept: a final
  ``Segment(gen_tokens=1)`` follows it (the forward pass over the returned tokens samples one
  token) and ``metadata["trailing_call"]`` is True;
* a non-last segment without a call is merged into the next one (the model keeps decoding;
  ``metadata["merged_segments"]`` counts them);
* a completion of 0 tokens becomes 1 (``metadata["zero_completions"]`` counts them);
* a negative ``api_token_length`` (four VE segments of ``merged_exp_uniform.json`` have -2, at a
  context of 2047 tokens) is a call that returns 0 tokens, as in the harness, where
  ``[0] * -2 == []`` (``metadata["negative_returns"]`` counts them).

Labels: ``labels="source"`` (default) follows the data's SOURCE.md (integer keys = chatbot).
In ``merged_exp_uniform.json`` 19 integer-key requests (1, 2, 6, 18, 24, ...) are ALFWorld
episodes (numeric fields, prompt 1973 tokens, 4-token completions, ~0.09 s calls) whose ``N_2``
key lost its suffix; ``labels="content"`` calls those ``ve``. ``metadata["content_type"]`` always
holds the content-based label.

Text fields are tokenized with :func:`augserve.workload.tokens.count_tokens`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload.base import ScriptSource
from augserve.workload.errors import WorkloadError
from augserve.workload.holdout import usable
from augserve.workload.tokens import count_tokens

#: api_time (s) separating Math (calculator, ~1e-4 s) from QA (Wikipedia, ~0.7 s) for 32-hex keys.
MATH_QA_SPLIT_S = 0.01

_HEX32 = re.compile(r"[0-9a-f]{32}")
_INT = re.compile(r"[0-9]+")
_SUFFIX = re.compile(r"[0-9]+_([123])")
_KNOWN = {"prompt", "prompt_tokens", "completion", "completion_tokens", "api_time",
          "api_token", "api_token_length"}


def classify(
    key: str, segments: list[dict[str, Any]], api_times: list[float], labels: str = "source"
) -> str:
    """The augmentation type of an InferCept-mixture request, from its key and fields.

    32-hex keys: ``math`` when every call's api_time is below :data:`MATH_QA_SPLIT_S`, else
    ``qa``; integer keys: ``chatbot`` (``labels="content"``: ``ve`` if the fields are numeric);
    ``N_1``: ``tts``; ``N_2`` with numeric token fields: ``ve``; ``N_2`` with text fields and
    ``N_3``: ``image``; anything else: ``other``.
    """
    if _HEX32.fullmatch(key):
        return "qa" if any(t >= MATH_QA_SPLIT_S for t in api_times) else "math"
    if _INT.fullmatch(key):
        if labels == "content" and "completion_tokens" in segments[0]:
            return "ve"
        return "chatbot"
    m = _SUFFIX.fullmatch(key)
    if m is None:
        return "other"
    if m.group(1) == "1":
        return "tts"
    if m.group(1) == "3":
        return "image"
    return "ve" if "completion_tokens" in segments[0] else "image"


class _Parser:
    """Parses one file; finds line numbers only when reporting an error."""

    def __init__(self, path: Path, labels: str = "source") -> None:
        if labels not in ("source", "content"):
            raise ValueError(f"labels must be 'source' or 'content', got {labels!r}")
        self.path = path
        self.labels = labels
        try:
            self.text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise WorkloadError(f"not UTF-8 text ({e})", file=path) from None

    def key_line(self, key: str) -> int | None:
        m = re.search(re.escape(json.dumps(key)) + r"\s*:", self.text)
        return None if m is None else self.text.count("\n", 0, m.start()) + 1

    def fail(self, key: str, seg: int | None, field: str | None, reason: str) -> WorkloadError:
        where = f"request '{key}'" + ("" if seg is None else f" segment {seg}")
        return WorkloadError(reason, file=self.path, line=self.key_line(key), field=field,
                             where=where)

    def load(self) -> dict[str, Any]:
        dup: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            d: dict[str, Any] = {}
            for k, v in items:
                if k in d:
                    dup.append(k)
                d[k] = v
            return d

        try:
            data = json.loads(self.text, object_pairs_hook=pairs)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"invalid JSON: {e.msg} (column {e.colno})", file=self.path,
                                line=e.lineno) from None
        if not isinstance(data, dict):
            raise WorkloadError("top level must be an object {request_id: [segments]}",
                                file=self.path, line=1)
        if dup:
            raise WorkloadError(f"duplicate key '{dup[0]}'", file=self.path,
                                line=self.key_line(dup[0]))
        if not data:
            raise WorkloadError("no requests", file=self.path, line=1)
        return data

    def number(self, key: str, k: int, seg: dict[str, Any], field: str) -> float:
        v = seg[field]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(key, k, field, f"must be a finite number, got {v!r}")
        if v < 0:
            raise self.fail(key, k, field, f"must be >= 0, got {v!r}")
        return float(v)

    def tokens(
        self, key: str, k: int, seg: dict[str, Any], num: str, txt: str, neg_ok: bool = False
    ) -> int:
        """Token count from the integer field ``num`` or, failing that, the text field ``txt``."""
        if num in seg:
            v = seg[num]
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                else:
                    raise self.fail(key, k, num, f"must be an integer, got {v!r}")
            if v < 0 and not neg_ok:
                raise self.fail(key, k, num, f"must be >= 0, got {v!r}")
            return v
        if txt in seg:
            v = seg[txt]
            if not isinstance(v, str):
                raise self.fail(key, k, txt, f"must be a string, got {type(v).__name__}")
            return count_tokens(v)
        raise self.fail(key, k, num, f"missing (neither '{num}' nor '{txt}' is present)")

    def request(self, key: str, raw: Any) -> AugRequest:
        if not isinstance(raw, list):
            raise self.fail(key, None, None, f"must be a list of segments, got "
                                             f"{type(raw).__name__}")
        if not raw:
            raise self.fail(key, None, None, "has no segments")
        for k, seg in enumerate(raw):
            if not isinstance(seg, dict):
                raise self.fail(key, k, None, f"must be an object, got {type(seg).__name__}")
            unknown = sorted(set(seg) - _KNOWN)
            if unknown:
                raise self.fail(key, k, unknown[0], "unknown field")
        prompt = self.tokens(key, 0, raw[0], "prompt_tokens", "prompt")
        if prompt < 1:
            raise self.fail(key, 0, "prompt_tokens", "the user prompt must have >= 1 token")
        prompt_text = raw[0].get("prompt") if isinstance(raw[0].get("prompt"), str) else None
        gens: list[int] = []
        calls: list[tuple[float, int] | None] = []
        api_times: list[float] = []
        zero = neg = 0
        for k, seg in enumerate(raw):
            g = self.tokens(key, k, seg, "completion_tokens", "completion")
            if g == 0:
                g, zero = 1, zero + 1
            has_time = "api_time" in seg
            has_ret = "api_token_length" in seg or "api_token" in seg
            if has_time and not has_ret:
                raise self.fail(key, k, "api_token_length",
                                "missing ('api_time' is given but neither 'api_token_length' "
                                "nor 'api_token')")
            if has_ret and not has_time:
                raise self.fail(key, k, "api_time", "missing (a return length is given)")
            call = None
            if has_time:
                t = self.number(key, k, seg, "api_time")
                r = self.tokens(key, k, seg, "api_token_length", "api_token", neg_ok=True)
                if t != 0 or r != 0:
                    if r < 0:
                        r, neg = 0, neg + 1
                    call = (t, r)
                    api_times.append(t)
            gens.append(g)
            calls.append(call)
        aug_type = classify(key, raw, api_times, self.labels)
        content_type = classify(key, raw, api_times, "content")
        segs: list[Segment] = []
        carry = merged = 0
        for k, (g, c) in enumerate(zip(gens, calls, strict=True)):
            last = k == len(gens) - 1
            if c is None and not last:
                carry, merged = carry + g, merged + 1
                continue
            call = None if c is None else ToolCall(aug_type, c[0], c[1])
            segs.append(Segment(g + carry, call))
            carry = 0
        trailing = segs[-1].call is not None
        if trailing:
            segs.append(Segment(1))
        meta: dict[str, Any] = {"source": "infercept_mix", "key": key, "trailing_call": trailing,
                                "content_type": content_type}
        if zero:
            meta["zero_completions"] = zero
        if neg:
            meta["negative_returns"] = neg
        if merged:
            meta["merged_segments"] = merged
        return AugRequest(rid=key, arrival_s=0.0, prompt_tokens=prompt, segments=tuple(segs),
                          aug_type=aug_type, prompt_text=prompt_text,
                          metadata=MappingProxyType(meta),
                          prefix=((f"infercept:{key}", prompt),))


def load_infercept_json(path: str | Path, labels: str = "source") -> list[AugRequest]:
    """All requests of an InferCept/LAMPS JSON file, in file order (``arrival_s`` = 0).

    ``labels``: ``"source"`` (SOURCE.md's key rules) or ``"content"`` (see the module doc).
    Raises :class:`WorkloadError` (file, line of the request key, field) on any malformed entry;
    nothing is returned unless the whole file parses.
    """
    p = _Parser(Path(path), labels)
    data = p.load()
    return [p.request(str(key), raw) for key, raw in data.items()]


class InferceptSource(ScriptSource):
    """Request scripts drawn uniformly with replacement from an InferCept JSON file.

    InferCept's harness samples request ids with replacement (``random.choices``); here the draw
    uses the workload's numpy generator so that a seed fixes the sequence. ``holdout`` (held-out
    row ids per dataset, :mod:`augserve.workload.holdout`) keeps the scripts a predictor
    artifact was not fit on.
    """

    def __init__(self, path: str | Path, labels: str = "source",
                 holdout: Mapping[str, frozenset[str]] | None = None) -> None:
        self.path = Path(path)
        pool = load_infercept_json(self.path, labels)
        self.pool: list[AugRequest] = [r for r in pool if usable("infercept_mix", r.rid, holdout)]
        if not self.pool:
            raise ValueError(f"{self.path}: no script is held out by the predictor's split")

    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        idx = rng.integers(0, len(self.pool), size=n)
        return [self.pool[i] for i in idx]
