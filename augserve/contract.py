"""The policy contract's types: what engines tell policies and what policies answer.

:class:`EngineInfo` (static, once per run), :class:`EngineState` (a snapshot at every call),
:class:`RequestView` (one request as a real serving system knows it, the script hidden),
:class:`KVMode` / :class:`KVDecision` (the answer at a tool call), :class:`Reject` (the answer
that turns an arriving request away) and :class:`State`. The calls themselves are
:class:`augserve.sched.base.Policy`. Units: times in seconds, lengths in tokens, KV in blocks.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from augserve.request import AugRequest


class KVMode(enum.StrEnum):
    """What happens to a request's KV cache while its tool call runs."""

    VLLM = "vllm"  # the request ends at the call; the continuation is a new request at the tail
    PRESERVE = "preserve"  # keep the blocks on the GPU during the call
    DISCARD = "discard"  # free the blocks; recompute the context (chunked) on resume
    SWAP = "swap"  # copy the blocks to CPU within the swap budget; copy back on resume


class KVDecision(NamedTuple):
    """The full answer at a tool call: a KV mode and, for ``preserve``, a time-to-live.

    ``ttl_s``: keep the blocks at most this long into the call (s), then free them as
    ``discard`` would (Continuum's TTL pinning); None keeps them until the tool returns. The
    simulator applies it; stock vLLM plays every call in ``vllm`` mode (the live engine counts
    the mode asked for in ``stats["requested_kv_modes"]``).
    """

    mode: KVMode
    ttl_s: float | None = None


def kv_decision(answer: KVMode | str | KVDecision) -> KVDecision:
    """``on_intercept``'s answer as a :class:`KVDecision`; ValueError naming the bad field."""
    if isinstance(answer, KVDecision):
        mode, ttl = KVMode(answer.mode), answer.ttl_s
    else:
        mode, ttl = KVMode(answer), None
    if ttl is not None:
        if mode is not KVMode.PRESERVE:
            raise ValueError(f"KVDecision.ttl_s applies to 'preserve' only, got mode {mode!r}")
        if not math.isfinite(ttl) or ttl < 0:
            raise ValueError(f"KVDecision.ttl_s must be a finite number >= 0 (s), got {ttl!r}")
    return KVDecision(mode, ttl)


class Reject(NamedTuple):
    """``on_enqueue``'s answer to turn an arriving request away (admission control): it never
    runs, its record says ``reason``, and it counts as not meeting any SLO."""

    reason: str


class State(enum.StrEnum):
    """Where a request is in the engine."""

    WAITING = "waiting"  # in the waiting queue (new, resumed after a tool, or preempted)
    RUNNING = "running"  # holds blocks and is scheduled (prefill or decode)
    PAUSED = "paused"  # inside a tool call
    FINISHED = "finished"


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
    #: blocks of their own held by requests paused in a tool call (reclaimable; shared prefix
    #: blocks they reference are not counted)
    paused_blocks: int
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


#: The request metadata a policy may read (``RequestView.metadata``): what a client can send a
#: server at arrival (:data:`augserve.vllm.hints.SCHEMA`). Workloads keep more (where a script
#: came from, how it was filled or cut, its tool classes); that describes the script, which a
#: serving system does not know, so views leave it out. Keys named ``x_*`` are a client's own
#: (a tier, a tag sent as ``vllm_xargs``) and pass through; no workload writes them.
VIEW_METADATA: tuple[str, ...] = (
    "source",  # dataset / application the request comes from
    "tools",  # names of the tools offered to the model
    "tools_schema_tokens",  # tokens of their schemas in the prompt
    "predicted_output_tokens",  # client-side predictions (hints)
    "predicted_num_calls",
    "predicted_tool_s",
)
CLIENT_PREFIX = "x_"


class RequestView:
    """What a policy may know about a request. Read-only; the script stays hidden.

    The engine updates the fields it exposes; a policy must not keep a view across calls expecting
    it to stay current (it is only guaranteed consistent during the call it was passed to).
    """

    __slots__ = ("_r", "_oracle", "_meta")

    def __init__(self, runtime: Any, oracle: bool = False) -> None:
        self._r = runtime
        self._oracle = oracle
        self._meta: Mapping[str, Any] | None = None  # the filtered metadata, built once

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
        """The request's :data:`VIEW_METADATA` and ``x_*`` keys (the rest is hidden)."""
        if self._meta is None:  # a request's arrival metadata never changes
            meta = self._r.req.metadata
            self._meta = MappingProxyType({k: v for k, v in meta.items()
                                           if k in VIEW_METADATA or k.startswith(CLIENT_PREFIX)})
        return self._meta

    @property
    def session_id(self) -> str:
        """The program the request belongs to (an agent run, a chat session: its turns share
        it); the request's own id when it belongs to none."""
        sid = self._r.req.session_id
        return sid if sid is not None else self._r.req.rid

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
