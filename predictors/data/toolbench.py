"""ToolBench ToolEval default eval set (gpt-3.5-turbo CoT answers) -> ``ToolUseRow``.

Reads ``<data_dir>/toolbench_cot/G*.json`` (each a JSON object ``query_id -> record``); one row per
record (600 in this release).

Mapping:
- ``prompt_text`` = ``query`` (the system prompt is empty in this release).
- ``tools`` = names of ``available_tools`` (including the special ``Finish``);
  ``tools_schema_tokens`` = tokens of ``json.dumps(available_tools)``.
- ``calls`` = tool nodes of the (linear) ``answer_details`` chain whose name is not ``Finish``,
  in order; the name is read from the node text ``{'name': '<tool>', ...``.
- ``response_tokens`` = tokens of ``json.loads(final_answer)["final_answer"]`` when the chain
  gave an answer (also ``segment_tokens[-1]``).
- ``group`` = connected component of the RapidAPI *tools* (parsed from each function's
  description ``subfunction for tool "<tool>"``): two records sharing any tool share a group, so no
  tool is seen on both sides of a split (the query_id families/file groups are too coarse, the exact
  tool set would still leak shared tools). The label is ``toolbench:<first tool of component>``.
- ``rid`` = ``<file stem>/<query_id>`` (query ids repeat across files: ``19191``).

Missing (None, never invented): every message is truncated to 100 characters in this release, so
the tokens generated before each call (thought + call arguments) and every tool return length are
unknown. ``response_tokens`` is None when the chain hit the step limit without calling Finish
(``final_answer == ""`` and no Finish call), gave up (``give_up_and_restart``, also read from the
truncated Finish arguments when ``final_answer`` is empty), or the final answer JSON is malformed
or itself truncated. ``meta["final_status"]`` says which: ``answer`` | ``step_limit`` |
``give_up`` | ``malformed_final_answer`` | ``finish_without_final_answer``. Answers whose only
defect is raw control characters inside strings are read with ``json.loads(strict=False)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from augserve.workload.tokens import count_tokens
from predictors.schema import ConversionReport, ToolUseRow

SOURCE = "toolbench_cot"
_TOOL_NODE = re.compile(r"^\{'name': '([^']*)'")
_SUBFUNCTION = re.compile(r'subfunction for tool "([^"]+)"')
_REQUIRED = ("query", "available_tools", "answer")
_REQUIRED_ANSWER = ("final_answer", "answer_details")


def _load_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: top level must be an object query_id -> record, got {type(data).__name__}"
        )
    return data


def _rapidapi_tool(fn: dict[str, Any]) -> str:
    """The RapidAPI tool a function belongs to (description, else the ``_for_<tool>`` suffix)."""
    m = _SUBFUNCTION.search(str(fn.get("description", "")))
    if m:
        return m.group(1)
    name = str(fn.get("name", ""))
    return name.rsplit("_for_", 1)[-1]


def _chain(details: Any) -> list[dict[str, Any]] | None:
    """The nodes of a linear chain (tree with one child per node), or None if it branches."""
    if not isinstance(details, list) or len(details) != 1:
        return None
    nodes, node = [], details[0]
    while True:
        if not isinstance(node, dict) or "role" not in node:
            return None
        nodes.append(node)
        nxt = node.get("next") or []
        if len(nxt) > 1:
            return None
        if not nxt:
            return nodes
        node = nxt[0]


def _final(answer: str) -> tuple[str, str | None, str | None]:
    """``(final_status, return_type, final answer text)`` from ``answer.final_answer``."""
    if not answer.strip():
        return "step_limit", None, None
    obj: Any = None
    for strict in (True, False):
        try:
            obj = json.loads(answer, strict=strict)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(obj, dict):
        return "malformed_final_answer", None, None
    rtype = obj.get("return_type")
    text = obj.get("final_answer")
    if rtype == "give_up_and_restart":
        return "give_up", rtype, None
    if isinstance(text, str) and text.strip():
        return "answer", rtype, text
    return "malformed_final_answer", rtype, None


def _components(toolsets: list[set[str]]) -> list[str]:
    """Label of the connected component (by shared tool) of each tool set."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ts in toolsets:
        items = sorted(ts)
        for t in items:
            find(t)
        for t in items[1:]:
            a, b = find(items[0]), find(t)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for t in parent:
        members.setdefault(find(t), []).append(t)
    label = {root: min(ms) for root, ms in members.items()}
    return [label[find(min(ts))] if ts else "" for ts in toolsets]


def convert(data_dir: Path) -> tuple[list[ToolUseRow], ConversionReport]:
    """Convert ``data_dir/toolbench_cot/G*.json`` (one row per query)."""
    folder = Path(data_dir) / SOURCE
    files = sorted(folder.glob("G*.json"))
    if not files:
        raise FileNotFoundError(f"no G*.json files in {folder}")
    report = ConversionReport(source=SOURCE, files=len(files))
    rows: list[ToolUseRow] = []
    toolsets: list[set[str]] = []
    for path in files:
        for qid, rec in _load_object(path).items():
            report.raw_records += 1
            if not isinstance(rec, dict):
                report.skip("record_not_object")
                continue
            missing = [k for k in _REQUIRED if k not in rec]
            answer = rec.get("answer")
            if not missing and isinstance(answer, dict):
                missing = [f"answer.{k}" for k in _REQUIRED_ANSWER if k not in answer]
            elif not missing:
                missing = ["answer"]
            if missing:
                report.skip(f"missing_field:{missing[0]}")
                continue
            query, tools_raw = rec["query"], rec["available_tools"]
            if not isinstance(query, str) or not query.strip():
                report.skip("empty_query")
                continue
            if not isinstance(tools_raw, list) or not all(isinstance(t, dict) for t in tools_raw):
                report.skip("bad_available_tools")
                continue
            nodes = _chain(answer["answer_details"])
            if nodes is None:
                report.skip("non_linear_answer_details")
                continue
            calls: list[str] = []
            finish_msgs: list[str] = []
            n_assistant = 0
            bad_node = False
            for node in nodes:
                if node["role"] == "assistant":
                    n_assistant += 1
                if node["role"] != "tool":
                    continue
                m = _TOOL_NODE.match(str(node.get("message", "")))
                if m is None:
                    bad_node = True
                    break
                if m.group(1) == "Finish":
                    finish_msgs.append(str(node["message"]))
                else:
                    calls.append(m.group(1))
            if bad_node:
                report.skip("unparseable_tool_node")
                continue
            final_answer = answer["final_answer"]
            status, rtype, text = _final(final_answer if isinstance(final_answer, str) else "")
            if status == "step_limit" and finish_msgs:
                # Finish was called but final_answer is empty: its (truncated) arguments tell why
                gave_up = any("give_up_and_restart" in m for m in finish_msgs)
                status = "give_up" if gave_up else "finish_without_final_answer"
            response = count_tokens(text) if text is not None else None
            if response is None:
                report.missing("response_tokens")
            if calls:
                report.missing("segment_tokens:before_calls")
                report.missing("return_tokens")
            rapid = {_rapidapi_tool(t) for t in tools_raw if t.get("name") != "Finish"}
            toolsets.append(rapid)
            rows.append(
                ToolUseRow(
                    source=SOURCE,
                    rid=f"{path.stem}/{qid}",
                    group="",  # filled in once every file is read
                    prompt_text=query,
                    prompt_tokens=count_tokens(query),
                    tools=[str(t.get("name", "")) for t in tools_raw],
                    tools_schema_tokens=count_tokens(json.dumps(tools_raw, ensure_ascii=False)),
                    calls=calls,
                    segment_tokens=[None] * len(calls) + [response],
                    return_tokens=[None] * len(calls),
                    response_tokens=response,
                    meta={
                        "file": path.name,
                        "query_id": str(qid),
                        "total_steps": answer.get("total_steps"),
                        "final_status": status,
                        "return_type": rtype,
                        "finish_calls": len(finish_msgs),
                        "assistant_nodes": n_assistant,
                        "rapidapi_tools": sorted(rapid),
                    },
                )
            )
    for row, label in zip(rows, _components(toolsets), strict=True):
        row.group = f"toolbench:{label or row.rid}"
    report.rows = len(rows)
    return rows, report
