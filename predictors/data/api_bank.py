"""API-Bank (EMNLP 2023) level-1/2 dialogues and level-3 requests -> ``ToolUseRow``.

Reads ``<data_dir>/api_bank/``:

``lv1-lv2-samples/{level-1-given-desc,level-2-toolsearcher}/*.jsonl`` — one dialogue per file,
one row per dialogue (``meta["level"]`` 1 or 2). A dialogue is treated as one augmented request:
- ``prompt_text`` = all ``User`` turns joined by newlines (later user turns — confirmations,
  credentials — are input the request needs, so they count as prompt; ``meta["user_turns"]``).
- ``calls`` = the ``API`` lines in order; ``return_tokens[k]`` = tokens of
  ``json.dumps(result["output"], ensure_ascii=False)``.
- ``segment_tokens[k]`` = tokens of all ``AI`` turns between call ``k-1`` and call ``k`` (summed
  per turn); 0 where the dialogue has no AI text there (the AI went straight to the call). The
  ``API-Request: [...]`` call text itself is not in the data, so it is not counted
  (``meta["call_arg_tokens"]`` = tokens of ``json.dumps(param_dict)`` per call).
- ``segment_tokens[-1]`` = ``response_tokens`` = tokens of all AI turns after the last call
  (``meta["last_ai_tokens"]`` = the last AI line alone); None (and counted in
  ``missing_fields["response_tokens"]``) when no AI turn follows the last call.
- ``tools``: level 1 ("given desc") = the APIs named in the file name plus those called; level 2 =
  ``["ToolSearcher"]`` (the other APIs are retrieved at run time; their descriptions come back in
  ToolSearcher's return). ``tools_schema_tokens`` = tokens of the offered APIs' description JSON
  lines as API-Bank puts them in its prompts, read from ``test-data/level-{1,2}-*.json``;
  APIs without a description there are counted in ``missing_fields["tool_description"]``.

``test-data/level-3.json`` — 50 complete plan-retrieve-call requests, one row each (``level=3``):
``prompt_text`` = ``requirement``; ``calls`` = ``apis[*].api_name``; ``return_tokens`` = tokens of
``json.dumps(apis[k].output.output)``; ``segment_tokens[k]`` = tokens of the expected generation
``API-Request: [...]`` for step ``k`` from ``test-data/level-3-batch-inf.json`` (matched by
``sample_id``/``api_id`` and API name, else None); final segment = ``response``. Offered tool =
``ToolSearcher``.

``group`` = ``api_bank:`` + the sorted API name set of the dialogue (file-name APIs plus called
APIs, without the ubiquitous ``ToolSearcher``/``GetUserToken``), so dialogues about the same APIs
(including the level-2 and level-3 variants) land in the same split.

Nothing is invented: thoughts do not exist in this data (segments are AI chat text), there are no
timings. Empty dialogue files and records missing fields are counted in ``report.skipped``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from augserve.workload.tokens import count_tokens
from predictors.data.jsonio import load_json
from predictors.schema import ConversionReport, ToolUseRow

SOURCE = "api_bank"
LEVEL_DIRS = {"level-1-given-desc": 1, "level-2-toolsearcher": 2}
DESC_FILES = (
    "level-1-api.json",
    "level-1-response.json",
    "level-2-api.json",
    "level-2-response.json",
)
_HELPERS = frozenset({"ToolSearcher", "GetUserToken"})
_REQUEST = re.compile(r"API-Request:\s*\[(\w+)\(")


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{i}: each line must be an object, got {type(obj).__name__}")
        out.append(obj)
    return out


def _descriptions(test_dir: Path, report: ConversionReport) -> dict[str, str]:
    """API name -> its description JSON line, from the prompts in the test-data files."""
    desc: dict[str, str] = {}
    for name in DESC_FILES:
        path = test_dir / name
        if not path.is_file():
            report.missing(f"file:test-data/{name}")
            continue
        report.files += 1
        for item in load_json(path, list):
            instr = item.get("instruction") if isinstance(item, dict) else None
            if not isinstance(instr, str) or "API descriptions:" not in instr:
                continue
            for line in instr.split("API descriptions:", 1)[1].strip().splitlines():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                    desc.setdefault(obj["name"], line)
    return desc


def _schema_tokens(tools: list[str], desc: dict[str, str], report: ConversionReport) -> int:
    lines = [desc[t] for t in tools if t in desc]
    if len(lines) < len(tools):
        report.missing("tool_description")
    return count_tokens("\n".join(lines))


def _group(apis: set[str]) -> str:
    core = sorted(apis - _HELPERS) or sorted(apis) or ["none"]
    return f"{SOURCE}:" + "+".join(core)


def _dialogue(
    path: Path, level: int, desc: dict[str, str], report: ConversionReport
) -> ToolUseRow | None:
    lines = _load_jsonl(path)
    if not lines:
        report.skip("empty_dialogue")
        return None
    users: list[str] = []
    calls: list[str] = []
    segments: list[int | None] = []
    returns: list[int | None] = []
    arg_tokens: list[int] = []
    ai_since_call: list[int] = []  # token counts of the AI turns since the last call
    ai_turns = 0
    for obj in lines:
        role = obj.get("role")
        if role in ("User", "AI"):
            if not isinstance(obj.get("text"), str):
                report.skip("turn_missing_text")
                return None
            if role == "User":
                users.append(obj["text"])
            else:
                ai_turns += 1
                ai_since_call.append(count_tokens(obj["text"]))
        elif role == "API":
            result = obj.get("result")
            if not isinstance(obj.get("api_name"), str) or not isinstance(result, dict):
                report.skip("api_line_missing_field")
                return None
            if "output" not in result:
                report.skip("api_result_missing_output")
                return None
            calls.append(obj["api_name"])
            segments.append(sum(ai_since_call))
            ai_since_call = []
            returns.append(count_tokens(json.dumps(result["output"], ensure_ascii=False)))
            arg_tokens.append(count_tokens(json.dumps(obj.get("param_dict"), ensure_ascii=False)))
        else:
            report.skip("unknown_role")
            return None
    prompt = "\n".join(users)
    if not prompt.strip():
        report.skip("no_user_turn")
        return None
    response = sum(ai_since_call) if ai_since_call else None
    if response is None:
        report.missing("response_tokens")
    segments.append(response)
    file_apis = set(path.name.split("-level-")[0].split("-"))
    tools = sorted(file_apis | set(calls)) if level == 1 else ["ToolSearcher"]
    return ToolUseRow(
        source=SOURCE,
        rid=f"{path.parent.name}/{path.stem}",
        group=_group(file_apis | set(calls)),
        prompt_text=prompt,
        prompt_tokens=count_tokens(prompt),
        tools=tools,
        tools_schema_tokens=_schema_tokens(tools, desc, report),
        calls=calls,
        segment_tokens=segments,
        return_tokens=returns,
        response_tokens=response,
        meta={
            "level": level,
            "file": f"lv1-lv2-samples/{path.parent.name}/{path.name}",
            "user_turns": len(users),
            "ai_turns": ai_turns,
            "last_ai_tokens": ai_since_call[-1] if ai_since_call else None,
            "call_arg_tokens": arg_tokens,
            "segment_kind": "ai_text",
        },
    )


def _level3(test_dir: Path, desc: dict[str, str], report: ConversionReport) -> list[ToolUseRow]:
    path = test_dir / "level-3.json"
    if not path.is_file():
        report.missing("file:test-data/level-3.json")
        return []
    report.files += 1
    data = load_json(path, list)
    steps: dict[tuple[int, int], str] = {}
    batch = test_dir / "level-3-batch-inf.json"
    if batch.is_file():
        report.files += 1
        for item in load_json(batch, list):
            if isinstance(item, dict) and isinstance(item.get("output"), str):
                steps[(item.get("sample_id"), item.get("api_id"))] = item["output"]
    else:
        report.missing("file:test-data/level-3-batch-inf.json")
    rows = []
    for i, rec in enumerate(data):
        report.raw_records += 1
        if not isinstance(rec, dict) or not all(k in rec for k in ("requirement", "apis")):
            report.skip("level3_missing_field")
            continue
        apis = rec["apis"]
        if not isinstance(apis, list) or not all(
            isinstance(a, dict)
            and isinstance(a.get("api_name"), str)
            and isinstance(a.get("output"), dict)
            and "output" in a["output"]
            for a in apis
        ):
            report.skip("level3_bad_api_entry")
            continue
        prompt = str(rec["requirement"]).strip()
        if not prompt:
            report.skip("level3_empty_requirement")
            continue
        calls = [a["api_name"] for a in apis]
        segments: list[int | None] = []
        for j, name in enumerate(calls):
            text = steps.get((i, j))
            m = _REQUEST.search(text) if text else None
            if m is None or m.group(1) != name:
                report.missing("segment_tokens")
                segments.append(None)
            else:
                segments.append(count_tokens(text))
        response_text = rec.get("response")
        response = count_tokens(response_text) if isinstance(response_text, str) else None
        if response is None:
            report.missing("response_tokens")
        segments.append(response)
        tools = ["ToolSearcher"]
        rows.append(
            ToolUseRow(
                source=SOURCE,
                rid=f"level-3/{i}",
                group=_group(set(calls)),
                prompt_text=prompt,
                prompt_tokens=count_tokens(prompt),
                tools=tools,
                tools_schema_tokens=_schema_tokens(tools, desc, report),
                calls=calls,
                segment_tokens=segments,
                return_tokens=[
                    count_tokens(json.dumps(a["output"]["output"], ensure_ascii=False))
                    for a in apis
                ],
                response_tokens=response,
                meta={
                    "level": 3,
                    "file": "test-data/level-3.json",
                    "index": i,
                    "toolsearcher_calls": calls.count("ToolSearcher"),
                    "call_arg_tokens": [
                        count_tokens(json.dumps(a.get("input"), ensure_ascii=False)) for a in apis
                    ],
                    "segment_kind": "api_request_text",
                },
            )
        )
    return rows


def convert(data_dir: Path) -> tuple[list[ToolUseRow], ConversionReport]:
    """Convert the level-1/2 dialogues and the level-3 requests."""
    root = Path(data_dir) / SOURCE
    report = ConversionReport(source=SOURCE)
    desc = _descriptions(root / "test-data", report)
    dialogue_files = [
        (p, level)
        for sub, level in LEVEL_DIRS.items()
        for p in sorted((root / "lv1-lv2-samples" / sub).glob("*.jsonl"))
    ]
    if not dialogue_files:
        raise FileNotFoundError(f"no dialogues in {root / 'lv1-lv2-samples'}")
    rows: list[ToolUseRow] = []
    for path, level in dialogue_files:
        report.files += 1
        report.raw_records += 1
        row = _dialogue(path, level, desc, report)
        if row is not None:
            rows.append(row)
    rows.extend(_level3(root / "test-data", desc, report))
    report.rows = len(rows)
    return rows, report
