"""The policy interface: the only thing an engine asks of a scheduler.

Each step the engine asks for the order of the waiting queue and the step's token budget; at each
tool call it asks which KV mode to use. Policies see :class:`~augserve.request.RequestView` and
:class:`~augserve.request.EngineState` only, and never import an engine module.

Two ways to order the waiting queue:

* static keys (``dynamic_order = False``): ``priority(view, state)`` is called once when a request
  enters the waiting queue and the engine keeps a heap (O(log n) per event). Lower key first.
* dynamic (``dynamic_order = True``): ``order(views, state)`` is called whenever the engine can
  admit a request and returns the rids in the order to try.
* policy-owned queue (``owns_queue = True``): the engine reports every request entering the
  waiting queue (``on_enqueue``) and every admission (``on_admit``); when it can admit, it walks
  ``candidates(state, fits)`` lazily. ``fits(view)`` says whether ``view``'s next chunk fits the
  free KV now: admission stops at the first candidate that does not (vLLM's head-of-line rule),
  so a policy that wants to skip such a request yields a fitting one first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

from augserve.request import EngineInfo, EngineState, KVMode, RequestView


class Policy(ABC):
    """Abstract scheduling policy. Subclasses set the class attributes that describe them."""

    #: short name used in tables and file names
    name: str = "policy"
    #: True if the policy reads the request script through ``view.script`` (never a default)
    oracle: bool = False
    #: False: order by ``priority`` keys fixed at enqueue time; True: call ``order`` each time
    dynamic_order: bool = False
    #: True: the policy keeps the waiting queue itself (on_enqueue / on_admit / candidates)
    owns_queue: bool = False

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        """Key fixed when ``view`` enters the waiting queue; lower is served first."""
        return (view.submit_s,)

    def order(self, views: Sequence[RequestView], state: EngineState) -> list[str]:
        """Rids of the waiting requests in the order admission should try them."""
        return [v.rid for v in sorted(views, key=lambda v: self.priority(v, state))]

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        """``view`` entered the waiting queue (owns_queue policies)."""
        raise NotImplementedError

    def on_admit(self, view: RequestView) -> None:
        """``view`` left the waiting queue for the running set (owns_queue policies)."""
        raise NotImplementedError

    def candidates(
        self, state: EngineState, fits: Callable[[RequestView], bool]
    ) -> Iterator[RequestView]:
        """Waiting requests in the order to try admitting them (owns_queue policies)."""
        raise NotImplementedError

    @abstractmethod
    def token_budget(self, state: EngineState) -> int:
        """Tokens (prefill + decode) the next step may schedule; clipped to the engine's cap.

        Called only on steps where prefill work could be scheduled; must not have side effects
        that change later decisions (the engine may skip decode-only steps without asking).
        Decode tokens of running requests are always scheduled (vLLM requires
        ``max_num_batched_tokens >= max_num_seqs``); the budget bounds prefill on top of them.
        """

    @abstractmethod
    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        """KV mode for the tool call ``view`` has just made."""

    def on_tool_return(self, view: RequestView, duration_s: float) -> None:  # noqa: B027
        """Observe a finished tool call (for estimators); default: nothing."""

    def reset(self, info: EngineInfo) -> None:
        """Start of a run: learn the engine's static facts and forget any earlier run."""
        self.info = info
