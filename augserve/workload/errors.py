"""The error every workload loader raises for bad input: it names the file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class WorkloadError(ValueError):
    """A malformed workload input.

    ``str(err)`` reads like ``path:LINE: field 'api_time' of request 'abc' segment 2: must be
    >= 0``. ``file``, ``line`` (1-based, ``None`` if unknown) and ``field`` (``None`` when the
    problem is not one field, e.g. broken JSON) are kept as attributes for tests and tools.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        where: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.where = where
        self.reason = reason
        loc = ""
        if self.file is not None:
            loc = self.file if line is None else f"{self.file}:{line}"
            loc += ": "
        what = ""
        if field is not None:
            what = f"field '{field}'"
            if where:
                what += f" of {where}"
        elif where:
            what = where
        super().__init__(f"{loc}{what}: {reason}" if what else f"{loc}{reason}")


def yaml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key path in a YAML text (``{}`` if it does not parse),
    so that a loader can name the line of a bad field."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = (*path, str(k.value))
                out[p] = k.start_mark.line + 1
                walk(v, p)

    try:
        walk(yaml.compose(text), ())
    except yaml.YAMLError:
        pass
    return out
