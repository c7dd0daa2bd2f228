"""Running means per kind (tool kind or augmentation type), bounded in size."""

from __future__ import annotations


class KindMeans:
    """Mean of the values seen so far for each kind; ``default`` for a kind not seen yet.

    Kinds come from clients on a server (``vllm_xargs``), so at most ``max_kinds`` are tracked:
    a new kind then replaces the one seen least often (the oldest of those), so a stream of
    made-up names neither grows the table without bound nor pushes out the kinds that recur.
    """

    __slots__ = ("default", "max_kinds", "_sum", "_n")

    def __init__(self, default: float, max_kinds: int = 1024) -> None:
        if max_kinds < 1:
            raise ValueError(f"max_kinds={max_kinds} must be >= 1")
        self.default = float(default)
        self.max_kinds = int(max_kinds)
        self._sum: dict[str, float] = {}
        self._n: dict[str, int] = {}

    def mean(self, kind: str | None) -> float:
        n = self._n.get(kind or "", 0)
        return self._sum[kind or ""] / n if n else self.default

    def add(self, kind: str, value: float) -> None:
        if kind not in self._n and len(self._n) >= self.max_kinds:
            victim = min(self._n, key=self._n.__getitem__)  # first minimum: the oldest
            del self._n[victim], self._sum[victim]
        self._sum[kind] = self._sum.get(kind, 0.0) + value
        self._n[kind] = self._n.get(kind, 0) + 1

    def clear(self) -> None:
        self._sum.clear()
        self._n.clear()

    def __len__(self) -> int:
        return len(self._n)
