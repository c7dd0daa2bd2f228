"""The InferCept / LAMPS 6-augmentation mixture -> :class:`ToolUseRow` (one per request).

Reads ``data_dir/infercept_mix/merged_exp_uniform.json`` (397 requests, 1,841 calls) through
:func:`augserve.workload.infercept_json.load_infercept_json` (``labels="source"``), so the rows
follow exactly the segment rules of InferCept's harness documented there (merged call-less
segments, 0-token completions counted as 1, a trailing call followed by a 1-token final segment,
negative return lengths as 0). ``diverse_oneapi_merged_exp_uniform.json`` is the same requests
cut to one call and is not converted.

Row fields: ``prompt_text`` = the user prompt where the file has text, else ``""``
(``missing("prompt_text")``); ``calls`` = the tool kind of each call (= the aug type: math, qa,
ve, chatbot, image, tts); ``segment_tokens``, ``return_tokens``, ``response_tokens`` (the last
segment) from the file; ``meta["tool_s"]`` = the recorded call durations (s), the only real tool
durations among the datasets; ``tools = [aug_type]``, ``tools_schema_tokens = 0`` (the tool
instructions are part of the prompt text already). Group = ``f"{aug_type}:{key}"``.
"""

from __future__ import annotations

from pathlib import Path

from augserve.workload.infercept_json import load_infercept_json
from predictors.schema import ConversionReport, ToolUseRow

NAME = "infercept_mix"
FILE = "merged_exp_uniform.json"


def convert(data_dir: Path) -> tuple[list[ToolUseRow], ConversionReport]:
    """Rows and the report for ``data_dir/infercept_mix/merged_exp_uniform.json``.

    A malformed file raises :class:`~augserve.workload.errors.WorkloadError` (a ValueError)
    naming the file, the line of the request key and the field.
    """
    path = Path(data_dir) / NAME / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    report = ConversionReport(NAME, files=1)
    rows: list[ToolUseRow] = []
    for r in load_infercept_json(path, labels="source"):
        report.raw_records += 1
        calls = [s.call for s in r.segments[:-1] if s.call is not None]
        text = r.prompt_text or ""
        if not text:
            report.missing("prompt_text")
        meta = dict(r.metadata)
        meta["tool_s"] = [c.duration_s for c in calls]
        rows.append(ToolUseRow(
            source=NAME, rid=r.rid, group=f"{r.aug_type}:{r.rid}", prompt_text=text,
            prompt_tokens=r.prompt_tokens, tools=[r.aug_type], tools_schema_tokens=0,
            calls=[c.kind for c in calls], segment_tokens=[s.gen_tokens for s in r.segments],
            return_tokens=[c.return_tokens for c in calls],
            response_tokens=r.segments[-1].gen_tokens, aug_type=r.aug_type, meta=meta,
        ))
        report.rows += 1
    return rows, report
