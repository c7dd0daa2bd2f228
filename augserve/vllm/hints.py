"""The per-request hints a client may send to a vLLM server running augserve's scheduler.

Hints travel in ``vllm_xargs`` over HTTP (``SamplingParams.extra_args`` in Python). One schema,
:data:`SCHEMA`, is checked twice:

* at the API server, before the engine, by :class:`augserve.vllm.validation.HintValidator`
  (vLLM's per-request ``validate_params`` hook): a violation is an HTTP 400 naming the field and
  the reason, the way vLLM rejects a bad sampling parameter;
* again where the scheduler builds the request's view (:func:`parse_hints`, which never raises):
  a request whose hints are unusable there (a server started without the validator, or the
  Python API) is scheduled as a hint-less request and counted, never an exception inside the
  EngineCore.

Keys outside the schema are passed through untouched (vLLM and other plugins read their own
keys from the same dict: ``session_id``, ``kv_transfer_params``, ...), except a near miss of an
augserve key (``tool_duration``), which is an error: a misspelt hint must not vanish silently.

This module does not import vLLM. Units: seconds, tokens.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

MAX_TOKENS = 10_000_000  # any token count a hint may state
MAX_CALLS = 4096  # tool calls of one request
MAX_TOOL_S = 3600.0  # one tool call (s): a longer pause is a new session
MAX_TEXT_CHARS = 262_144  # prompt_text
MAX_NAME_CHARS = 64  # aug_type, source, tool
MAX_TOOL_NAME_CHARS = 128  # an entry of tools
MAX_TOOLS = 256  # entries of tools
MAX_SESSION_S = 7 * 86400.0  # how far back arrival_s may lie (s)
MAX_CLOCK_SKEW_S = 60.0  # how far in the future arrival_s may lie (s)
MAX_UNIX_S = 1e11  # any Unix time a hint may state (s; year ~5138)

#: the validator's ``--logits-processors`` value (vLLM's ``<module>:<class>`` form)
HINT_VALIDATOR = "augserve.vllm.validation:HintValidator"

#: keys vLLM itself reads from extra_args: never mistaken for a misspelt augserve hint
VLLM_KEYS = frozenset({"session_id", "kv_transfer_params", "ec_transfer_params",
                       "kv_cache_report_mode"})


@dataclass(frozen=True, slots=True)
class Field:
    """One hint: its JSON type (``kind``), bounds and meaning."""

    key: str
    kind: str  # name | text | int | number | time | names | ints | numbers
    doc: str
    lo: float = 0.0
    hi: float = math.inf
    max_items: int = 0  # lists


SCHEMA: tuple[Field, ...] = (
    Field("aug_type", "name", "augmentation type (math, qa, ve, chatbot, image, tts, ...); "
          "default other"),
    Field("prompt_text", "text", "prompt text for the predictor's text features"),
    Field("source", "name", "dataset / application the request comes from (predictor feature)"),
    Field("tools", "names", "names of the tools offered to the model (predictor feature)",
          max_items=MAX_TOOLS),
    Field("tools_schema_tokens", "int", "tokens of the tool schemas in the prompt",
          hi=MAX_TOKENS),
    Field("arrival_s", "time", "Unix time (s) the first turn of a multi-turn request arrived",
          lo=-MAX_SESSION_S, hi=MAX_CLOCK_SKEW_S),
    Field("generated_tokens", "int", "tokens the model generated in earlier turns",
          hi=MAX_TOKENS),
    Field("tool", "name", "kind of the tool whose result this turn carries"),
    Field("tool_durations", "numbers", "duration (s) of each tool call made so far",
          hi=MAX_TOOL_S, max_items=MAX_CALLS),
    Field("return_lengths", "ints", "tokens each of those calls returned (same length)",
          hi=MAX_TOKENS, max_items=MAX_CALLS),
    Field("predicted_output_tokens", "number", "client's prediction: tokens the whole request "
          "generates", hi=MAX_TOKENS),
    Field("predicted_num_calls", "number", "client's prediction: tool calls the whole request "
          "makes", hi=MAX_CALLS),
    Field("predicted_tool_s", "number", "client's prediction: seconds one call takes",
          hi=MAX_TOOL_S),
)
FIELDS: Mapping[str, Field] = MappingProxyType({f.key: f for f in SCHEMA})
_TOP_LEVEL = ("aug_type", "prompt_text", "arrival_s", "generated_tokens", "tool",
              "tool_durations", "return_lengths")  # the view's own fields; the rest: metadata


class HintError(ValueError):
    """A hint that breaks :data:`SCHEMA`: ``key`` is the top-level key, ``where`` the exact
    place (``tool_durations[2]``)."""

    def __init__(self, key: str, where: str, reason: str) -> None:
        super().__init__(f"vllm_xargs.{where}: {reason}")
        self.key = key
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hints:
    """Validated hints of one request (defaults: a hint-less request)."""

    aug_type: str = "other"
    prompt_text: str | None = None
    arrival_s: float | None = None  # Unix time
    generated_tokens: int = 0
    tool: str | None = None
    tool_durations: tuple[float, ...] = ()
    return_lengths: tuple[int, ...] = ()
    #: predictor metadata and predictions (validated) plus pass-through keys
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


NO_HINTS = Hints()


def _show(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 40 else r[:37] + "..."


def _name(f: Field, where: str, x: Any, max_chars: int) -> str:
    if not isinstance(x, str):
        raise HintError(f.key, where, f"expected a string, got {_show(x)}")
    if not 1 <= len(x) <= max_chars or not x.isprintable():
        raise HintError(f.key, where, f"expected 1-{max_chars} printable characters, got "
                        f"{_show(x)}")
    return x


def _number(f: Field, where: str, x: Any, integer: bool, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        want = "an integer" if integer else "a number"
        raise HintError(f.key, where, f"expected {want}, got {_show(x)}")
    if isinstance(x, float) and not math.isfinite(x):
        raise HintError(f.key, where, f"must be finite, got {x!r}")
    if integer and isinstance(x, float) and not x.is_integer():
        raise HintError(f.key, where, f"expected an integer, got {x!r}")
    if not lo <= x <= hi:
        raise HintError(f.key, where, f"must be in [{lo:g}, {hi:g}], got {_show(x)}")
    return x


def _value(f: Field, x: Any, now_s: float | None) -> Any:
    k = f.key
    if f.kind == "name":
        return _name(f, k, x, MAX_NAME_CHARS)
    if f.kind == "text":
        if not isinstance(x, str):
            raise HintError(k, k, f"expected a string, got {_show(x)}")
        if len(x) > MAX_TEXT_CHARS:
            raise HintError(k, k, f"at most {MAX_TEXT_CHARS} characters, got {len(x)}")
        return x
    if f.kind in ("int", "number"):
        v = _number(f, k, x, f.kind == "int", f.lo, f.hi)
        return int(v) if f.kind == "int" else float(v)
    if f.kind == "time":
        # finite bounds first: a JSON integer of 400 digits must not overflow float()
        v = float(_number(f, k, x, False, -MAX_UNIX_S, MAX_UNIX_S))
        if now_s is not None and not now_s + f.lo <= v <= now_s + f.hi:
            raise HintError(k, k, f"Unix time {v:.3f} s is {now_s - v:+.0f} s from the "
                            f"server's clock; allowed: up to {-f.lo:g} s before, "
                            f"{f.hi:g} s after")
        return v
    if not isinstance(x, (list, tuple)):
        raise HintError(k, k, f"expected a list, got {_show(x)}")
    if len(x) > f.max_items:
        raise HintError(k, k, f"at most {f.max_items} entries, got {len(x)}")
    if f.kind == "names":
        return tuple(_name(f, f"{k}[{i}]", y, MAX_TOOL_NAME_CHARS) for i, y in enumerate(x))
    integer = f.kind == "ints"
    vals = (_number(f, f"{k}[{i}]", y, integer, f.lo, f.hi) for i, y in enumerate(x))
    return tuple(int(v) for v in vals) if integer else tuple(float(v) for v in vals)


def check_hints(extra: Mapping[str, Any] | None, now_s: float | None = None) -> Hints:
    """The validated hints in ``extra`` (``vllm_xargs``); raises :class:`HintError`.

    ``now_s`` (Unix time) bounds ``arrival_s`` to ``[now - 7 days, now + 60 s]``; None skips that
    check.
    """
    if not extra:
        return NO_HINTS
    if not isinstance(extra, Mapping):
        raise HintError("vllm_xargs", "vllm_xargs", f"expected an object, got {_show(extra)}")
    got: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, x in extra.items():
        f = FIELDS.get(key) if isinstance(key, str) else None
        if f is None:
            if isinstance(key, str) and key not in VLLM_KEYS:
                near = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.85)
                if near:
                    raise HintError("unknown", key, f"unknown augserve hint; did you mean "
                                    f"{near[0]!r}? (known: {', '.join(FIELDS)})")
            meta[key] = x  # someone else's key: passed through, never read by augserve
            continue
        got[key] = _value(f, x, now_s)
    durs = got.get("tool_durations", ())
    rets = got.get("return_lengths", ())
    if len(durs) != len(rets):
        raise HintError("return_lengths", "return_lengths",
                        f"{len(rets)} entries but tool_durations has {len(durs)}: both list "
                        "the calls made so far")
    meta.update(got)
    return Hints(
        aug_type=got.get("aug_type", "other"), prompt_text=got.get("prompt_text"),
        arrival_s=got.get("arrival_s"), generated_tokens=got.get("generated_tokens", 0),
        tool=got.get("tool"), tool_durations=durs, return_lengths=rets,
        metadata=MappingProxyType(meta),
    )


def parse_hints(extra: Any, max_tokens: int | None = None) -> tuple[Hints, str | None]:
    """``(hints, None)``, or ``(NO_HINTS, reason)`` when they are unusable. Never raises: this
    runs inside the engine, where an exception would take the server down.

    ``max_tokens`` (the model's context, tokens) bounds every token count a hint states: no
    part of a request's history can be longer than the context (this also keeps one request
    from dragging a per-kind running mean of returned tokens far off). The clock window of
    ``arrival_s`` is the API server's check; here the arrival is only clamped (by the caller)
    to the submission time.
    """
    try:
        h = check_hints(extra)
    except HintError as e:
        return NO_HINTS, str(e)
    except Exception as e:  # noqa: BLE001 - whatever a client sent, the engine keeps serving
        return NO_HINTS, f"vllm_xargs: unreadable ({type(e).__name__})"
    if max_tokens is not None:
        counts = {"generated_tokens": h.generated_tokens,
                  "return_lengths": max(h.return_lengths, default=0),
                  "tools_schema_tokens": h.metadata.get("tools_schema_tokens", 0)}
        for key, n in counts.items():
            if n > max_tokens:
                return NO_HINTS, (f"vllm_xargs.{key}: {n} tokens, more than the model's "
                                  f"context of {max_tokens}")
    return h, None


def schema_table() -> str:
    """The schema as a markdown table (docs/vllm.md)."""
    kinds = {"name": f"string, 1-{MAX_NAME_CHARS} printable chars",
             "text": f"string, at most {MAX_TEXT_CHARS} chars", "int": "integer",
             "number": "number", "time": "number (Unix s)",
             "names": f"list of strings (1-{MAX_TOOL_NAME_CHARS} chars each)",
             "ints": "list of integers", "numbers": "list of numbers"}
    rows = ["| key | type | range | meaning |", "|---|---|---|---|"]
    for f in SCHEMA:
        if f.kind == "time":
            rng = f"now − {f.lo * -1 / 86400:g} days … now + {f.hi:g} s"
        elif f.kind in ("int", "number", "ints", "numbers"):
            rng = f"{f.lo:g} … {f.hi:g}"
        else:
            rng = ""
        if f.max_items:
            rng = (rng + "; " if rng else "") + f"≤ {f.max_items} entries"
        rows.append(f"| `{f.key}` | {kinds[f.kind]} | {rng} | {f.doc} |")
    return "\n".join(rows)
