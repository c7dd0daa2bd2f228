"""Dataset converters: ``load_source(name, data_dir) -> (rows, report)``.

Each converter module exposes ``convert(data_dir: Path) -> tuple[list[ToolUseRow],
ConversionReport]`` reading ``data_dir/<name>/`` (``data_dir`` is ``../shared/data`` by default).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from predictors.schema import ConversionReport, ToolUseRow

#: source name -> module under predictors.data
CONVERTERS: dict[str, str] = {
    "toolbench_cot": "predictors.data.toolbench",
    "api_bank": "predictors.data.api_bank",
    "toolalpaca": "predictors.data.toolalpaca",
    "tooltalk": "predictors.data.tooltalk",
    "bfcl": "predictors.data.bfcl",
    "infercept_mix": "predictors.data.infercept_mix",
}

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_source(
    name: str, data_dir: str | Path = DEFAULT_DATA_DIR
) -> tuple[list[ToolUseRow], ConversionReport]:
    """Convert one dataset. Unknown name or missing folder -> a clear error."""
    if name not in CONVERTERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(CONVERTERS))}")
    root = Path(data_dir)
    if not (root / name).is_dir():
        raise FileNotFoundError(f"dataset folder {root / name} not found (data_dir={root})")
    mod = importlib.import_module(CONVERTERS[name])
    rows, report = mod.convert(root)
    for r in rows:
        r.validate()
    return rows, report
