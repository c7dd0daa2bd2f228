"""The engine protocol: run a request stream under a policy and return per-request records.

:class:`Engine` starts a :class:`Run`; :meth:`Engine.run` drives it to the end."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from augserve.contract import EngineState
from augserve.engine.player import ScriptPlayer
from augserve.records import RequestRecord
from augserve.request import AugRequest
from augserve.sched.base import Policy


@dataclass(slots=True)
class RunResult:
    """What one engine run produced. Times in seconds on the engine clock."""

    records: list[RequestRecord]
    end_s: float  # engine clock when the run stopped (last finish, or the time limit)
    stats: dict[str, Any] = field(default_factory=dict)  # engine counters (steps, forward time…)


def validated(requests: Sequence[AugRequest], max_model_len: int,
              num_blocks: int, block_size: int) -> list[AugRequest]:
    """Requests sorted by arrival; a duplicate id, a context over ``max_model_len`` tokens or one
    that can never fit ``num_blocks`` KV blocks is an error naming the request."""
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    seen: set[str] = set()
    for r in reqs:
        if r.rid in seen:
            raise ValueError(f"duplicate request id {r.rid!r}")
        seen.add(r.rid)
        if r.final_context > max_model_len:
            raise ValueError(
                f"request {r.rid}: context reaches {r.final_context} tokens > "
                f"max_model_len={max_model_len}; fit the workload to the model first"
            )
        if r.final_context + 1 > num_blocks * block_size:
            raise ValueError(
                f"request {r.rid}: context of {r.final_context} tokens can never fit the "
                f"KV cache of {num_blocks} blocks"
            )
    return reqs


@runtime_checkable
class Run(Protocol):
    """One engine run, driven step by step: what :meth:`Engine.run` loops over and what the RL
    environment (:class:`rl.env.SchedulingEnv`) steps. ``Engine.start`` begins one."""

    player: ScriptPlayer  # the requests' scripts: arrivals, finished requests, tool calls
    now: float  # engine clock (s)

    def advance(self) -> bool:
        """Run until the next step that needs a policy decision. True: call ``step()`` next;
        False: the run is over (everything finished, or the time limit)."""

    def step(self) -> None:
        """One engine iteration."""

    def state(self) -> EngineState:
        """The snapshot a policy would be given now."""

    def finish(self) -> RunResult:
        """End the run (releasing what it holds) and return every request's record."""


class Engine(ABC):
    """An engine plays the model and the tools for a stream of :class:`AugRequest`."""

    @abstractmethod
    def start(self, requests: Sequence[AugRequest], policy: Policy,
              progress: bool = False) -> Run:
        """A run of ``requests`` under ``policy``, to drive step by step."""

    def run(
        self, requests: Sequence[AugRequest], policy: Policy, progress: bool = False
    ) -> RunResult:
        """Serve ``requests`` under ``policy`` and return their records."""
        run = self.start(requests, policy, progress)
        try:
            while run.advance():
                run.step()
        finally:
            result = run.finish()
        return result
