"""The augmented request: a prompt followed by decode segments separated by tool calls.

An engine knows the whole script (it plays the model and the tools). A policy only ever sees a
:class:`RequestView`, which exposes what a real serving system knows at that moment.

Units: times in seconds, lengths in tokens, KV in blocks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

#: The six InferCept/LAMPS augmentation types, plus a catch-all for other workloads.
AUG_TYPES: tuple[str, ...] = ("math", "qa", "ve", "chatbot", "image", "tts")


class KVMode(enum.StrEnum):
    """What happens to a request's KV cache while its tool call runs."""

    VLLM = "vllm"  # the request ends at the call; the continuation is a new request at the tail
    PRESERVE = "preserve"  # keep the blocks on the GPU during the call
    DISCARD = "discard"  # free the blocks; recompute the context (chunked) on resume
    SWAP = "swap"  # copy the blocks to CPU within the swap budget; copy back on resume


class State(enum.StrEnum):
    """Where a request is in the engine."""

    WAITING = "waiting"  # in the waiting queue (new, resumed after a tool, or preempted)
    RUNNING = "running"  # holds blocks and is scheduled (prefill or decode)
    PAUSED = "paused"  # inside a tool call
    FINISHED = "finished"


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

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError(f"request {self.rid}: no segments")
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.rid}: prompt_tokens must be >= 1")
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
            self.prompt_text, MappingProxyType(meta),
        )


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """Static facts about an engine, given to a policy once per run (``Policy.reset``)."""

    total_blocks: int  # GPU KV blocks
    block_size: int  # tokens per block
    kv_bytes_per_token: int
    max_num_batched_tokens: int  # hard cap on the per-step token budget
    max_num_seqs: int  # most requests running at once
    max_model_len: int  # context limit (tokens)
    prefill_s_per_token: float  # marginal forward time of one more token in a step (s)
    step_floor_s: float  # time of the cheapest step (s)
    swap_bytes_per_s: float  # GPU<->CPU bandwidth for KV swap (bytes/s), each direction


class EngineState(NamedTuple):
    """Read-only engine snapshot handed to policies. Times in s, memory in KV blocks.

    A named tuple: engines build one at every policy call, and a tuple is built 2-3x faster
    than a frozen dataclass.
    """

    now_s: float
    free_blocks: int
    paused_blocks: int  # blocks held by requests paused in a tool call (reclaimable)
    num_running: int
    num_waiting: int
    num_paused: int
    last_step_s: float  # duration of the previous engine step
    step: int  # engine steps done so far
    running_prefill_tokens: int  # tokens running requests still have to prefill
    #: tokens waiting requests had to prefill when they entered the queue (the prefill backlog)
    waiting_prefill_tokens: int
    swap_budget_blocks: int  # blocks that can move GPU->CPU (and back) in the next step
    info: EngineInfo


class RequestView:
    """What a policy may know about a request. Read-only; the script stays hidden.

    The engine updates the fields it exposes; a policy must not keep a view across calls expecting
    it to stay current (it is only guaranteed consistent during the call it was passed to).
    """

    __slots__ = ("_r", "_oracle")

    def __init__(self, runtime: Any, oracle: bool = False) -> None:
        self._r = runtime
        self._oracle = oracle

    # -- known at arrival -------------------------------------------------------------------
    @property
    def rid(self) -> str:
        return self._r.req.rid

    @property
    def arrival_s(self) -> float:
        return self._r.req.arrival_s

    @property
    def prompt_tokens(self) -> int:
        return self._r.req.prompt_tokens

    @property
    def prompt_text(self) -> str | None:
        return self._r.req.prompt_text

    @property
    def aug_type(self) -> str:
        return self._r.req.aug_type

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._r.req.metadata

    # -- runtime -------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._r.state

    @property
    def submit_s(self) -> float:
        """When the request last entered the waiting queue as a (re)submission (s)."""
        return self._r.submit_s

    @property
    def preempted(self) -> bool:
        """True while the request waits after a preemption."""
        return self._r.preempted

    @property
    def generated_tokens(self) -> int:
        return self._r.generated()

    @property
    def calls_done(self) -> int:
        return self._r.seg_idx if self._r.state is not State.PAUSED else self._r.seg_idx + 1

    @property
    def observed_tool_s(self) -> tuple[float, ...]:
        """Durations (s) of the tool calls that have returned."""
        return tuple(self._r.tool_durations)

    @property
    def observed_return_tokens(self) -> tuple[int, ...]:
        return tuple(self._r.return_lengths)

    @property
    def current_tool(self) -> str | None:
        """Kind of the tool call in progress (PAUSED) or just made (at interception)."""
        return self._r.current_tool

    @property
    def context_tokens(self) -> int:
        """Tokens of context the request has (prompt + generated + returned so far)."""
        return self._r.context()

    @property
    def computed_tokens(self) -> int:
        """Tokens whose KV exists on the GPU or in CPU swap."""
        return self._r.computed_now()

    @property
    def blocks_held(self) -> int:
        return self._r.blocks

    @property
    def wait_since_s(self) -> float:
        """When the request last entered the waiting queue (s); arrival for new requests."""
        return self._r.wait_since_s

    # -- clairvoyance (only for policies configured with oracle=True) ------------------------
    @property
    def script(self) -> AugRequest:
        if not self._oracle:
            raise PermissionError(
                "the request script is hidden from policies; set oracle=True in the policy config"
            )
        return self._r.req
