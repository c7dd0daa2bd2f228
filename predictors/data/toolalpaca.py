"""ToolAlpaca evaluation sets and ToolAlpaca-7B/13B solutions -> ``ToolUseRow``.

Reads ``<data_dir>/toolalpaca/``:

``eval_real.json`` / ``eval_simulated.json`` (lists of API records) — one row per instruction
(``meta["split"]`` = ``eval_real`` | ``eval_simulated``): ``prompt_text`` = ``Instructions[i]``;
``calls`` = the ``Action`` names of ``Golden_Answers[i]`` (the gold call sequence;
``meta["action_input_tokens"]`` = tokens of each ``Action_Input``). There is no model output:
``segment_tokens``, ``return_tokens`` and ``response_tokens`` are all None.

``evaluation_outputs/ToolAlpaca{7b,13b}.json`` (``API name -> [graded solution]``) — one row per
solution whose GPT-4 evaluator prompt embeds the model's actual process (``meta["split"]`` =
``model_output``, ``meta["model"]``): ``prompt_text`` = the ``## Task Instruction`` text;
``calls`` = the ``k. Function: <name>`` steps of ``## AI Assistant's Solution``;
``return_tokens[k]`` = tokens of the step's ``Retruns:`` text (sic; ``Status Code: ... Response:
...`` as the model saw it); ``response_tokens`` = ``segment_tokens[-1]`` = tokens of
``k. Final Response:``. The text the model generated before each call (thought, action, action
input) is not in the prompt, so those segments are None (``meta["action_input_tokens"]`` = tokens
of each step's ``Parameters:``). Entries with no evaluator prompt (error entries, string
``input``) are counted in ``skipped["evaluation_error_entry"]``, solutions that do not parse in
``skipped["unparseable_solution"]``.

``tools`` = the API's ``Function_Description`` keys (without the ``components`` trailer);
``tools_schema_tokens`` = tokens of its ``NLDocumentation`` (the text ToolAlpaca puts in the
prompt). ``group`` = ``toolalpaca:<API Name>``: the gold rows and the model rows of the same API
(the same instructions) always share a split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from augserve.workload.tokens import count_tokens
from predictors.data.jsonio import load_json
from predictors.schema import ConversionReport, ToolUseRow

SOURCE = "toolalpaca"
EVAL_FILES = ("eval_real.json", "eval_simulated.json")
_REQUIRED = ("Name", "Instructions", "Golden_Answers", "Function_Description", "NLDocumentation")
_STEP = re.compile(r"^(\d+)\. (Function|Final Response): ?", re.M)
_CALL = re.compile(r"(.*?)\nParameters: (.*?)\nRetruns: (.*)", re.S)
_SOLUTION = "## AI Assistant's Solution\n"


def _tools(api: dict[str, Any]) -> tuple[list[str], int]:
    fd = api.get("Function_Description")
    names = [k for k in fd if k != "components"] if isinstance(fd, dict) else []
    return names, count_tokens(str(api.get("NLDocumentation") or ""))


def _gold_rows(
    path: Path, report: ConversionReport, apis: dict[str, dict[str, Any]]
) -> list[ToolUseRow]:
    split = path.stem
    rows = []
    for api in load_json(path, list):
        instructions = api.get("Instructions") if isinstance(api, dict) else None
        n_instr = len(instructions) if isinstance(instructions, list) else 1
        missing = [k for k in _REQUIRED if not isinstance(api, dict) or k not in api]
        if missing or not isinstance(instructions, list):
            report.raw_records += n_instr
            for _ in range(n_instr):
                report.skip(f"missing_field:{missing[0] if missing else 'Instructions'}")
            continue
        name = str(api["Name"])
        apis.setdefault(name, api)
        tools, schema = _tools(api)
        golds = api["Golden_Answers"] if isinstance(api["Golden_Answers"], list) else []
        for i, instr in enumerate(instructions):
            report.raw_records += 1
            if i >= len(golds):
                report.skip("no_golden_answer")
                continue
            gold = golds[i]
            if not isinstance(gold, list) or not all(
                isinstance(a, dict) and isinstance(a.get("Action"), str) for a in gold
            ):
                report.skip("malformed_golden_answer")
                continue
            if not isinstance(instr, str) or not instr.strip():
                report.skip("empty_instruction")
                continue
            calls = [a["Action"] for a in gold]
            report.missing("segment_tokens")
            report.missing("response_tokens")
            if calls:
                report.missing("return_tokens")
            rows.append(
                ToolUseRow(
                    source=SOURCE,
                    rid=f"{split}/{name}/{i}",
                    group=f"{SOURCE}:{name}",
                    prompt_text=instr,
                    prompt_tokens=count_tokens(instr),
                    tools=tools,
                    tools_schema_tokens=schema,
                    calls=calls,
                    segment_tokens=[None] * (len(calls) + 1),
                    return_tokens=[None] * len(calls),
                    response_tokens=None,
                    meta={
                        "split": split,
                        "api": name,
                        "category": api.get("Category"),
                        "instruction_index": i,
                        "action_input_tokens": [
                            count_tokens(str(a.get("Action_Input", ""))) for a in gold
                        ],
                    },
                )
            )
    return rows


def _parse_solution(content: str) -> tuple[str, list[tuple[str, str, str]], str] | None:
    """``(task, [(function, parameters, returns)], final response)`` or None if unparseable."""
    if "## Task Instruction\n" not in content or _SOLUTION not in content:
        return None
    task = content.split("## Task Instruction\n", 1)[1].split("\n\n## Standard Answer", 1)[0]
    solution = content.split(_SOLUTION, 1)[1].rsplit("\n## Analysis", 1)[0]
    heads = list(_STEP.finditer(solution))
    if not heads or heads[0].start() != 0:
        return None
    if [int(h.group(1)) for h in heads] != list(range(1, len(heads) + 1)):
        return None
    if heads[-1].group(2) != "Final Response":
        return None
    steps, final = [], ""
    for j, h in enumerate(heads):
        body = solution[h.end() : heads[j + 1].start() if j + 1 < len(heads) else len(solution)]
        body = body.rstrip("\n")
        if h.group(2) == "Final Response":
            if j != len(heads) - 1:
                return None
            final = body.strip()
            continue
        m = _CALL.fullmatch(body)
        if m is None:
            return None
        steps.append((m.group(1).strip(), m.group(2), m.group(3)))
    return task.strip(), steps, final


def _model_rows(
    path: Path, report: ConversionReport, apis: dict[str, dict[str, Any]]
) -> list[ToolUseRow]:
    model = path.stem
    rows = []
    for name, entries in load_json(path, dict).items():
        if name == "statistics":
            continue
        if not isinstance(entries, list):
            raise ValueError(f"{path}: value of {name!r} must be a list of solutions")
        api = apis.get(name)
        if api is None:
            report.missing("api_record")
        tools, schema = _tools(api) if api is not None else ([], 0)
        instructions = [s.strip() for s in api.get("Instructions", [])] if api else []
        for i, entry in enumerate(entries):
            report.raw_records += 1
            inp = entry.get("input") if isinstance(entry, dict) else None
            if not (
                isinstance(inp, list)
                and inp
                and isinstance(inp[0], dict)
                and isinstance(inp[0].get("content"), str)
            ):
                report.skip("evaluation_error_entry")
                continue
            parsed = _parse_solution(inp[0]["content"])
            if parsed is None or not parsed[0]:
                report.skip("unparseable_solution")
                continue
            task, steps, final = parsed
            calls = [s[0] for s in steps]
            response = count_tokens(final)
            if calls:
                report.missing("segment_tokens:before_calls")
            rows.append(
                ToolUseRow(
                    source=SOURCE,
                    rid=f"{model}/{name}/{i}",
                    group=f"{SOURCE}:{name}",
                    prompt_text=task,
                    prompt_tokens=count_tokens(task),
                    tools=tools,
                    tools_schema_tokens=schema,
                    calls=calls,
                    segment_tokens=[None] * len(calls) + [response],
                    return_tokens=[count_tokens(s[2]) for s in steps],
                    response_tokens=response,
                    meta={
                        "split": "model_output",
                        "model": model,
                        "api": name,
                        "instruction_index": (
                            instructions.index(task) if task in instructions else None
                        ),
                        "action_input_tokens": [count_tokens(s[1]) for s in steps],
                        "process_correctness": entry.get("process_correctness"),
                        "final_response_correctness": entry.get("final_response_correctness"),
                    },
                )
            )
    return rows


def convert(data_dir: Path) -> tuple[list[ToolUseRow], ConversionReport]:
    """Convert the gold evaluation instructions and the 7B/13B graded solutions."""
    root = Path(data_dir) / SOURCE
    report = ConversionReport(source=SOURCE)
    apis: dict[str, dict[str, Any]] = {}
    rows: list[ToolUseRow] = []
    found = False
    for name in EVAL_FILES:
        path = root / name
        if not path.is_file():
            report.missing(f"file:{name}")
            continue
        found = True
        report.files += 1
        rows.extend(_gold_rows(path, report, apis))
    if not found:
        raise FileNotFoundError(f"neither of {EVAL_FILES} in {root}")
    for path in sorted((root / "evaluation_outputs").glob("*.json")):
        report.files += 1
        rows.extend(_model_rows(path, report, apis))
    report.rows = len(rows)
    return rows, report
