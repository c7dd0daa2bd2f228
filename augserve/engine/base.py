"""The engine protocol: run a request stream under a policy and return per-request records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from augserve.records import RequestRecord
from augserve.request import AugRequest
from augserve.sched.base import Policy


@dataclass(slots=True)
class RunResult:
    """What one engine run produced. Times in seconds on the engine clock."""

    records: list[RequestRecord]
    end_s: float  # engine clock when the run stopped (last finish, or the time limit)
    stats: dict[str, Any] = field(default_factory=dict)  # engine counters (steps, forward time…)


class Engine(ABC):
    """An engine plays the model and the tools for a stream of :class:`AugRequest`."""

    @abstractmethod
    def run(
        self, requests: Sequence[AugRequest], policy: Policy, progress: bool = False
    ) -> RunResult:
        """Serve ``requests`` (sorted by arrival) under ``policy`` and return their records."""
