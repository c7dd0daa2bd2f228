"""The augmented request: a prompt followed by decode segments separated by tool calls.

An engine knows the whole script (it plays the model and the tools). A policy only ever sees a
:class:`~augserve.contract.RequestView`, which exposes what a real serving system knows at that
moment.

Units: times in seconds, lengths in tokens, KV in blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from augserve.prefix import Prefix, check_prefix

#: The six InferCept/LAMPS augmentation types, plus a catch-all for other workloads.
AUG_TYPES: tuple[str, ...] = ("math", "qa", "ve", "chatbot", "image", "tts")

#: The tool kind of a user's turn in a session (reading the answer, typing the next message).
HUMAN = "human"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call: its kind, how long it runs (s) and how many tokens it returns."""

    kind: str
    duration_s: float
    return_tokens: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Decode ``gen_tokens`` tokens, then (unless this is the last segment) make ``call``."""

    gen_tokens: int
    call: ToolCall | None = None


@dataclass(frozen=True, slots=True)
class AugRequest:
    """A whole augmented request script.

    ``segments[k]`` generates ``gen_tokens`` and then calls its tool; the tool's returned tokens
    are appended to the context before segment ``k+1`` starts. Only the last segment has no call.
    """

    rid: str
    arrival_s: float
    prompt_tokens: int
    segments: tuple[Segment, ...]
    aug_type: str = "other"
    prompt_text: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    session_id: str | None = None  # the program it belongs to (RequestView.session_id)
    #: content keys of the prompt's shared prefix, ``(key, tokens)`` levels (augserve.prefix)
    prefix: Prefix = ()

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError(f"request {self.rid}: no segments")
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.rid}: prompt_tokens must be >= 1")
        if self.prefix:
            try:
                object.__setattr__(self, "prefix", check_prefix(self.prefix, self.prompt_tokens))
            except ValueError as e:
                raise ValueError(f"request {self.rid}: {e}") from None
        for k, seg in enumerate(self.segments):
            if seg.gen_tokens < 1:
                raise ValueError(f"request {self.rid}: segment {k} gen_tokens must be >= 1")
            last = k == len(self.segments) - 1
            if last and seg.call is not None:
                raise ValueError(f"request {self.rid}: the last segment cannot make a call")
            if not last and seg.call is None:
                raise ValueError(f"request {self.rid}: segment {k} must make a call")
            if seg.call is not None:
                if seg.call.duration_s < 0:
                    raise ValueError(f"request {self.rid}: segment {k} negative tool duration")
                if seg.call.return_tokens < 0:
                    raise ValueError(f"request {self.rid}: segment {k} negative return_tokens")

    @property
    def num_calls(self) -> int:
        return len(self.segments) - 1

    @property
    def output_tokens(self) -> int:
        """Tokens the model generates over the whole request."""
        return sum(s.gen_tokens for s in self.segments)

    @property
    def returned_tokens(self) -> int:
        return sum(s.call.return_tokens for s in self.segments if s.call is not None)

    @property
    def tool_time_s(self) -> float:
        return sum(s.call.duration_s for s in self.segments if s.call is not None)

    @property
    def final_context(self) -> int:
        """Context length (tokens) when the request finishes."""
        return self.prompt_tokens + self.output_tokens + self.returned_tokens

    def fit_context(self, max_len: int) -> AugRequest:
        """Truncate the script so that the context never exceeds ``max_len`` tokens.

        Mirrors how serving harnesses cap ``max_tokens`` at the model's context (InferCept caps
        output at ``2048 - prompt``). The prompt itself must fit: that is an input error.
        """
        if self.prompt_tokens >= max_len:
            raise ValueError(
                f"request {self.rid}: prompt_tokens={self.prompt_tokens} does not fit the "
                f"model context max_model_len={max_len}"
            )
        if self.final_context <= max_len:
            return self
        ctx = self.prompt_tokens
        segs: list[Segment] = []
        for seg in self.segments:
            room = max_len - ctx
            if seg.gen_tokens >= room or seg.call is None:
                segs.append(Segment(min(seg.gen_tokens, room)))
                break
            ctx += seg.gen_tokens
            if ctx + seg.call.return_tokens + 1 > max_len:
                segs.append(Segment(seg.gen_tokens))
                break
            segs.append(seg)
            ctx += seg.call.return_tokens
        meta = dict(self.metadata)
        meta["truncated_to"] = max_len
        return AugRequest(
            self.rid, self.arrival_s, self.prompt_tokens, tuple(segs), self.aug_type,
            self.prompt_text, MappingProxyType(meta), self.session_id, self.prefix,
        )
