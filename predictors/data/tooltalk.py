"""ToolTalk (Farn & Shin, 2023) conversations -> :class:`ToolUseRow`, one per assistant turn.

Reads ``data_dir/tooltalk/{easy,tooltalk}/*.json`` (one conversation per file, 78 in all).

What one request is: **one assistant turn**, i.e. one user turn the assistant answers. The
request's prompt is the conversation so far, rendered as plain text, one line per message:

* ``user: <text>`` for user turns;
* for every earlier assistant turn, each api call as ``assistant call: <request JSON>`` followed
  by ``tool result: <response JSON or exception text>``, then ``assistant: <text>``
  (earlier calls and their results are in the context of a real deployment too);

then the current user turn(s). The request's calls are the assistant turn's ``apis`` in order.

* ``segment_tokens[k]`` (k < number of calls) = tokens of the call's own JSON
  (``{"api_name": ..., "parameters": ...}``): the text a function-calling model emits to make
  that call. ToolTalk records no free text before a call, so this is the exact generated call
  and nothing else (``meta["segment_basis"] = "call_json"``);
* ``segment_tokens[-1] = response_tokens`` = tokens of the assistant's ``text``;
* ``return_tokens[k]`` = tokens of ``json.dumps(response)``, or of the exception text when the
  call raised (``response`` is then ``null``).

Tools offered: ToolTalk gives the model every tool of the plugin suites a conversation uses.
The suite -> tools map is taken from the data itself: each of the 28 ``easy/`` conversations uses
one suite and its ``apis_used`` lists that suite's tools (7 suites, 28 tools); ``apis_used`` of the
conversation is added in case a suite were incomplete. The tool *schemas* are not in the data
(they live in ToolTalk's code), so ``tools_schema_tokens = 0`` and every row counts
``missing("tools_schema_tokens")``.

Skipped user turns (not requests): a user turn followed directly by another user turn (its text
is part of the next row's prompt; 1 in the data) and a final user turn nobody answers (42).
Group = ``conversation_id``. ``aug_type = "other"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augserve.workload.errors import WorkloadError
from augserve.workload.tokens import count_tokens
from predictors.schema import ConversionReport, ToolUseRow

NAME = "tooltalk"
SUBDIRS = ("easy", "tooltalk")


def _load(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WorkloadError(f"invalid JSON: {e.msg} (column {e.colno})", file=path,
                            line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise WorkloadError(f"not UTF-8 text ({e})", file=path) from None
    if not isinstance(d, dict):
        raise WorkloadError("top level must be a conversation object", file=path, line=1)
    for key, typ in (("conversation_id", str), ("conversation", list),
                     ("suites_used", list), ("apis_used", list)):
        if not isinstance(d.get(key), typ):
            raise WorkloadError(f"missing or not a {typ.__name__}", file=path, field=key)
    for i, t in enumerate(d["conversation"]):
        where = f"turn {i}"
        if not isinstance(t, dict) or t.get("role") not in ("user", "assistant"):
            raise WorkloadError("must be an object with role 'user' or 'assistant'", file=path,
                                field="role", where=where)
        if not isinstance(t.get("text"), str):
            raise WorkloadError("missing or not a string", file=path, field="text", where=where)
        apis = t.get("apis", [])
        if not isinstance(apis, list):
            raise WorkloadError("must be a list", file=path, field="apis", where=where)
        for a in apis:
            if (not isinstance(a, dict) or not isinstance(a.get("request"), dict)
                    or not isinstance(a["request"].get("api_name"), str)):
                raise WorkloadError("each api needs request.api_name", file=path,
                                    field="apis", where=where)
    return d


def _call_json(api: dict[str, Any]) -> str:
    return json.dumps(api["request"], ensure_ascii=False)


def _result_text(api: dict[str, Any]) -> str:
    exc = api.get("exception")
    if exc is not None:
        return str(exc)
    return json.dumps(api.get("response"), ensure_ascii=False)


def suite_tools(convs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Suite -> tool names, from single-suite conversations (the ``easy/`` set)."""
    out: dict[str, set[str]] = {}
    for d in convs:
        if len(d["suites_used"]) == 1:
            out.setdefault(d["suites_used"][0], set()).update(d["apis_used"])
    return out


def convert(data_dir: Path) -> tuple[list[ToolUseRow], ConversionReport]:
    """Rows (one per assistant turn) and the report for ``data_dir/tooltalk``."""
    root = Path(data_dir) / NAME
    report = ConversionReport(NAME)
    files = sorted(p for sub in SUBDIRS for p in (root / sub).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no ToolTalk conversation files under {root}/{{easy,tooltalk}}")
    convs = [(p, _load(p)) for p in files]
    report.files = len(files)
    suites = suite_tools([d for _, d in convs])
    rows: list[ToolUseRow] = []
    for path, d in convs:
        report.raw_records += 1
        tools: set[str] = set(d["apis_used"])
        for s in d["suites_used"]:
            tools |= suites.get(s, set())
        tool_list = sorted(tools)
        cid = d["conversation_id"]
        turns = d["conversation"]
        history: list[str] = []
        pending_user = False
        for i, t in enumerate(turns):
            if t["role"] == "user":
                if pending_user:
                    report.skip("user turn followed by another user turn")
                history.append(f"user: {t['text']}")
                pending_user = True
                continue
            apis = t.get("apis", [])
            prompt = "\n".join(history)
            ptoks = count_tokens(prompt)
            if not pending_user:
                report.skip("assistant turn without a user turn before it")
            elif ptoks < 1:
                report.skip("empty prompt")
            else:
                calls = [a["request"]["api_name"] for a in apis]
                seg: list[int | None] = [count_tokens(_call_json(a)) for a in apis]
                resp = count_tokens(t["text"])
                seg.append(resp)
                rows.append(ToolUseRow(
                    source=NAME, rid=f"{path.parent.name}/{path.stem}:{i}", group=cid,
                    prompt_text=prompt, prompt_tokens=ptoks, tools=tool_list,
                    tools_schema_tokens=0, calls=calls, segment_tokens=seg,
                    return_tokens=[count_tokens(_result_text(a)) for a in apis],
                    response_tokens=resp, aug_type="other",
                    meta={"conversation_id": cid, "turn": i, "segment_basis": "call_json",
                          "exceptions": sum(a.get("exception") is not None for a in apis)},
                ))
                report.rows += 1
                report.missing("tools_schema_tokens")
            for a in apis:
                history.append(f"assistant call: {_call_json(a)}")
                history.append(f"tool result: {_result_text(a)}")
            history.append(f"assistant: {t['text']}")
            pending_user = False
        if pending_user:
            report.skip("final user turn without an assistant reply")
    return rows, report
