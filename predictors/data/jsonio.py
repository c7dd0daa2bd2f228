"""Reading raw dataset files with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_json(path: Path, kind: type) -> Any:
    """Parse ``path`` as JSON whose top level must be a ``kind`` (list or dict)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, kind):
        raise ValueError(f"{path}: top level must be a {kind.__name__}, got {type(data).__name__}")
    return data
