"""The per-step decision trace both engines can write (JSONL), for simulator-vs-live parity.

One line per engine step (a forward pass) in which something was decided::

    {"step": 12, "t": 0.8431, "budget": 512, "admitted": ["r3"], "preempted": [],
     "kv": [["r1", "preserve"]], "expired": []}

``step`` counts the engine's steps that ran (1-based; the simulator's pure-copy steps count, idle
waits do not), ``t`` is the engine clock at the step's end (s), ``budget`` the token budget the
policy chose (null on steps where none was asked for), ``admitted`` / ``preempted`` request ids
in the order they happened, ``kv`` the KV mode applied at each tool call made in the step
(request id, mode), ``expired`` requests whose pinned KV reached its time-to-live or was
reclaimed under memory pressure. Steps with
none of these write no line; decisions made while the engine waited idle go with the next step
that runs. Each run writes its file anew.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO


class DecisionTrace:
    """Collects one step's decisions and writes them as a line at :meth:`flush`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = self.path.open("w", buffering=1 << 16)
        self._clear()

    @classmethod
    def for_policy(cls, path: str | Path, policy: str) -> DecisionTrace:
        """A trace at ``path`` with ``{policy}`` replaced by the policy's name (one file per
        policy when one engine runs several)."""
        return cls(str(path).replace("{policy}", policy))

    def _clear(self) -> None:
        self._budget: int | None = None
        self._admitted: list[str] = []
        self._preempted: list[str] = []
        self._kv: list[list[str]] = []
        self._expired: list[str] = []

    def budget(self, tokens: int) -> None:
        self._budget = int(tokens)

    def admitted(self, rid: str) -> None:
        self._admitted.append(rid)

    def preempted(self, rid: str) -> None:
        self._preempted.append(rid)

    def kv(self, rid: str, mode: str) -> None:
        self._kv.append([rid, mode])

    def expired(self, rid: str) -> None:
        self._expired.append(rid)

    def flush(self, step: int, t_s: float) -> None:
        """Write the step's line (if it decided anything) and start the next step."""
        if self._f is None:
            raise RuntimeError(f"decision trace {self.path} is closed")
        if (self._budget is not None or self._admitted or self._preempted or self._kv
                or self._expired):
            self._f.write(json.dumps({
                "step": int(step), "t": round(float(t_s), 6), "budget": self._budget,
                "admitted": self._admitted, "preempted": self._preempted, "kv": self._kv,
                "expired": self._expired,
            }) + "\n")
        self._clear()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_trace(path: str | Path) -> list[dict]:
    """The lines of a decision trace (for parity checks and tests)."""
    out = []
    with Path(path).open() as f:
        for n, line in enumerate(f, 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
    return out
