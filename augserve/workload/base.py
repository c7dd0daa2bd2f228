"""Workload building blocks: a source of request scripts and an arrival process.

A :class:`Workload` turns a seed into a list of :class:`~augserve.request.AugRequest` sorted by
arrival time. The same seed gives the same list, so every policy in a comparison sees the same
arrival sequence.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from augserve.request import AugRequest


class Workload(ABC):
    """Something that yields a seeded, arrival-sorted request stream."""

    @abstractmethod
    def requests(self, seed: int) -> list[AugRequest]:
        """The request stream for ``seed``, sorted by ``arrival_s`` (seconds from 0)."""


class ArrivalProcess(ABC):
    """Arrival timestamps (s) within a window."""

    @abstractmethod
    def times(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        """Sorted arrival times in ``[0, duration_s)``."""


class ScriptSource(ABC):
    """A pool of request scripts; arrival times are assigned by the workload."""

    @abstractmethod
    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        """``n`` scripts (arrival_s unset/0), e.g. drawn with replacement from a pool."""
