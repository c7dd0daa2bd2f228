"""The policy contract: the only thing an engine asks of a scheduler.

As in vLLM V1, the policy *is* the waiting queue. Both engines call it the same way, and never
ask what kind of policy it is:

* a request enters the waiting queue (``on_enqueue``: on arrival, after a tool call, after a
  preemption), is admitted to the running set (``on_admit``), and leaves the engine
  (``on_leave``: finished or aborted, from wherever it is). On arrival ``on_enqueue`` may answer
  :class:`~augserve.contract.Reject` to turn the request away (admission control: the
  simulator finishes it unrun, the vLLM scheduler aborts it);
* on a step where prefill work could be scheduled, ``on_step(state)`` (the place for a learned
  policy's network), then ``token_budget(state)`` (no side effects);
* when the engine can admit, it walks ``candidates(state, fits)`` lazily. ``fits(view)`` says
  whether ``view``'s next chunk fits the free KV now: admission stops at the first candidate
  that does not (vLLM's head-of-line rule), so a policy that wants to skip such a request
  yields a fitting one first;
* at a tool call, ``on_intercept(view, state)`` picks the KV mode (a
  :class:`~augserve.contract.KVMode`, or a :class:`~augserve.contract.KVDecision` with a
  time-to-live); at its return, ``on_tool_return(view, duration_s)``.

Policies see :class:`~augserve.contract.RequestView` and :class:`~augserve.contract.EngineState`
only, and never import an engine module. A policy that orders by a key fixed at enqueue time
subclasses :class:`~augserve.sched.keyed.KeyedPolicy`, which keeps the queue for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from augserve.contract import EngineInfo, EngineState, KVDecision, KVMode, Reject, RequestView


class Policy(ABC):
    """Abstract scheduling policy: the waiting queue, the token budget and the KV modes."""

    #: short name used in tables and file names
    name: str = "policy"
    #: True if the policy reads the request script through ``view.script`` (never a default)
    oracle: bool = False

    @abstractmethod
    def on_enqueue(self, view: RequestView, state: EngineState) -> Reject | None:
        """``view`` entered the waiting queue. On a new arrival the answer may be a
        :class:`~augserve.contract.Reject`: the request leaves at once (no ``on_leave``)."""

    @abstractmethod
    def on_admit(self, view: RequestView) -> None:
        """``view`` left the waiting queue for the running set."""

    def on_leave(self, view: RequestView) -> None:  # noqa: B027
        """``view`` left the engine (finished or aborted), told once; default: nothing. It may
        still be in the waiting queue (an abort): then it must leave it."""

    @abstractmethod
    def candidates(
        self, state: EngineState, fits: Callable[[RequestView], bool]
    ) -> Iterator[RequestView]:
        """Waiting requests in the order to try admitting them (lazily; may be abandoned)."""

    def on_step(self, state: EngineState) -> None:  # noqa: B027
        """A step where prefill work could be scheduled begins (just before
        ``token_budget``); default: nothing."""

    @abstractmethod
    def token_budget(self, state: EngineState) -> int:
        """Tokens (prefill + decode) the next step may schedule; clipped to the engine's cap.

        Called only on steps where prefill work could be scheduled, after ``on_step``; must
        not have side effects (the engine may skip decode-only steps without asking).
        Decode tokens of running requests are always scheduled (vLLM requires
        ``max_num_batched_tokens >= max_num_seqs``); the budget bounds prefill on top of them.
        """

    @abstractmethod
    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode | KVDecision:
        """KV mode (optionally with a time-to-live) for the tool call ``view`` has just made."""

    def on_tool_return(self, view: RequestView, duration_s: float) -> None:  # noqa: B027
        """Observe a finished tool call (for estimators); default: nothing."""

    def reset(self, info: EngineInfo) -> None:
        """Start of a run: learn the engine's static facts and forget any earlier run."""
        self.info = info
