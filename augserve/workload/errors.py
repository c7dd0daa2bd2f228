"""The error every workload loader raises for bad input: it names the file, line and field."""

from __future__ import annotations

from pathlib import Path


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
