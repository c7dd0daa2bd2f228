"""The common row every tool-use dataset is converted into (one row per request).

Lengths are tokens (``augserve.workload.tokens.count_tokens``); ``None`` means the dataset does
not have that field (never invented). A request generates ``segment_tokens[k]`` tokens, then makes
``calls[k]`` (whose result is ``return_tokens[k]`` tokens long), ..., and the last segment is the
final response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ToolUseRow:
    source: str  # dataset name, e.g. "toolbench_cot"
    rid: str  # unique within the source
    group: str  # rows sharing a group go to the same split (e.g. same API / conversation)
    prompt_text: str
    prompt_tokens: int
    tools: list[str]  # names of the tools offered
    tools_schema_tokens: int  # tokens of the offered tools' schemas/descriptions
    calls: list[str]  # tool names called, in order
    segment_tokens: list[int | None]  # len(calls) + 1: tokens generated before each call / final
    return_tokens: list[int | None]  # len(calls): tokens each call returned
    response_tokens: int | None  # the final response (== segment_tokens[-1] when known)
    aug_type: str = "other"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_calls(self) -> int:
        return len(self.calls)

    @property
    def output_tokens(self) -> int | None:
        """Total generated tokens, or None if any segment length is unknown."""
        if any(s is None for s in self.segment_tokens):
            return None
        return int(sum(self.segment_tokens))  # type: ignore[arg-type]

    def validate(self) -> None:
        if len(self.segment_tokens) != len(self.calls) + 1:
            raise ValueError(f"{self.source}/{self.rid}: segment_tokens must have len(calls)+1")
        if len(self.return_tokens) != len(self.calls):
            raise ValueError(f"{self.source}/{self.rid}: return_tokens must have len(calls)")
        if self.prompt_tokens < 1:
            raise ValueError(f"{self.source}/{self.rid}: prompt_tokens must be >= 1")


@dataclass(slots=True)
class ConversionReport:
    """What a converter did with each raw record: nothing is dropped silently."""

    source: str
    files: int = 0
    raw_records: int = 0
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    missing_fields: dict[str, int] = field(default_factory=dict)  # field -> rows lacking it

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def missing(self, name: str) -> None:
        self.missing_fields[name] = self.missing_fields.get(name, 0) + 1
