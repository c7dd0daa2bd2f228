"""BFCL v4 (Berkeley Function-Calling Leaderboard) -> :class:`ToolUseRow`.

Reads ``data_dir/bfcl/BFCL_v4_<category>.json`` with ``possible_answer/`` and
``multi_turn_func_doc/`` (all JSON Lines). BFCL has **no model responses**; choices made here:

* **Single-turn** categories (simple_*, multiple, parallel*, live_*, irrelevance): one row per
  question. Prompt = the question's messages rendered ``role: content`` one per line; tools = the
  offered functions, ``tools_schema_tokens`` = tokens of ``json.dumps`` of their schemas;
  calls = the ground-truth function names in order (parallel categories: the calls of one
  generation, serialized; ``meta["parallel"]``). irrelevance / live_irrelevance: 0 calls (the
  correct behaviour). **live_relevance is skipped** (16): its answer is "call something" with no
  ground truth, so the calls are unknown.
* **Multi-turn** categories: one row per entry of ``question`` (a user turn; in miss_func an
  entry can be empty: the withheld function is added at that turn and the model must now call
  it). Prompt = earlier user turns and their ground-truth call strings (``assistant call: ...``;
  the call *results* need BFCL's executable environment and are not included) + this turn.
  Tools = functions of ``involved_classes`` (docs from ``multi_turn_func_doc/``, class -> file
  map as in BFCL's ``MULTI_TURN_FUNC_DOC_FILE_MAPPING``) minus ``excluded_function`` and minus
  ``missed_function`` entries not yet added at that turn. Calls = this turn's ground truth.
* ``segment_tokens[k]`` (k < calls) = tokens of the ground-truth call text ``name(arg=value,
  ...)`` (multi-turn: the given string; single-turn: rendered from the first acceptable value of
  every argument, arguments that may be omitted left out). This is a **lower bound** on what a
  model emits before each call (no reasoning text; ``meta["segment_basis"] =
  "call_text_lower_bound"``). The final response is unknown: ``segment_tokens[-1] =
  response_tokens = None`` (``missing("response_tokens")``). Tool results are unknown:
  ``return_tokens`` are None (``missing("return_tokens")`` per row with calls).
* Group: single-turn rows sharing the same offered function set (``fn:<sha1 prefix>``);
  multi-turn rows by the conversation number shared by the four multi-turn variants
  (``multi_turn:<n>``). MathAPI calls carry ``meta["tool_classes"]`` = "calculator".
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from augserve.workload.errors import WorkloadError
from augserve.workload.tokens import count_tokens
from predictors.schema import ConversionReport, ToolUseRow

NAME = "bfcl"
PREFIX = "BFCL_v4_"

SINGLE_TURN = (
    "simple_python", "simple_java", "simple_javascript", "multiple", "parallel",
    "parallel_multiple", "live_simple", "live_multiple", "live_parallel",
    "live_parallel_multiple", "irrelevance", "live_irrelevance", "live_relevance",
)
MULTI_TURN = (
    "multi_turn_base", "multi_turn_long_context", "multi_turn_miss_func", "multi_turn_miss_param",
)
#: categories whose correct behaviour is no call (no possible_answer file)
NO_CALL = ("irrelevance", "live_irrelevance")
#: categories without usable ground truth (skipped)
NO_TRUTH = ("live_relevance",)

#: involved class -> doc file (BFCL bfcl_eval/constants: MULTI_TURN_FUNC_DOC_FILE_MAPPING)
FUNC_DOC_FILES: dict[str, str] = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}
CALCULATOR_CLASSES = ("MathAPI",)

_CALL_NAME = re.compile(r"\s*([A-Za-z_][\w.]*)\s*\(")


def read_jsonl(path: Path, key: str = "id") -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line, each with a string ``key``; a bad line
    raises :class:`WorkloadError` (a ValueError) naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise WorkloadError(f"not UTF-8 text ({e})", file=path) from None
    out: list[tuple[int, dict[str, Any]]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"invalid JSON: {e.msg} (column {e.colno})", file=path,
                                line=n) from None
        if not isinstance(d, dict) or not isinstance(d.get(key), str):
            raise WorkloadError(f"must be a JSON object with a string {key!r}", file=path,
                                line=n, field=key)
        out.append((n, d))
    return out


def _messages(path: Path, n: int, turn: Any) -> list[str]:
    if not isinstance(turn, list):
        raise WorkloadError("a turn must be a list of messages", file=path, line=n,
                            field="question")
    out = []
    for m in turn:
        if (not isinstance(m, dict) or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)):
            raise WorkloadError("messages need string role and content", file=path, line=n,
                                field="question")
        out.append(f"{m['role']}: {m['content']}")
    return out


def _first(v: Any) -> Any:
    """A chosen acceptable value; dict values are again lists of acceptable values."""
    if isinstance(v, dict):
        return {k: _first(a[0]) if isinstance(a, list) and a else a for k, a in v.items()
                if not (isinstance(a, list) and "" in a)}
    return v


def render_call(name: str, args: dict[str, list[Any]]) -> str:
    """``name(arg=value, ...)`` from possible_answer acceptable values (the shortest call)."""
    parts = []
    for k, acc in args.items():
        if not isinstance(acc, list) or not acc or "" in acc:
            continue  # "" acceptable = the argument may be omitted
        parts.append(f"{k}={_first(acc[0])!r}")
    return f"{name}({', '.join(parts)})"


def _group_of(names: list[str]) -> str:
    return "fn:" + hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()[:12]


def _single(
    root: Path, cat: str, report: ConversionReport, rows: list[ToolUseRow]
) -> None:
    qpath = root / f"{PREFIX}{cat}.json"
    qs = read_jsonl(qpath)
    report.files += 1
    answers: dict[str, tuple[int, Any]] = {}
    apath = root / "possible_answer" / f"{PREFIX}{cat}.json"
    if cat not in NO_CALL and cat not in NO_TRUTH:
        report.files += 1
        for n, a in read_jsonl(apath):
            gt = a.get("ground_truth")
            if not isinstance(gt, list) or not all(
                    isinstance(c, dict) and len(c) == 1 for c in gt):
                raise WorkloadError("must be a list of {function: {arg: [values]}}", file=apath,
                                    line=n, field="ground_truth")
            answers[a["id"]] = (n, gt)
    for n, q in qs:
        report.raw_records += 1
        funcs = q.get("function")
        question = q.get("question")
        if not isinstance(funcs, list) or not all(
                isinstance(f, dict) and isinstance(f.get("name"), str) for f in funcs):
            raise WorkloadError("must be a list of schemas with a name", file=qpath, line=n,
                                field="function")
        if not isinstance(question, list) or not question:
            raise WorkloadError("must be a non-empty list of turns", file=qpath, line=n,
                                field="question")
        if cat in NO_TRUTH:
            report.skip(f"{cat}: no ground-truth calls")
            continue
        msgs = [m for t in question for m in _messages(qpath, n, t)]
        prompt = "\n".join(msgs)
        ptoks = count_tokens(prompt)
        if ptoks < 1:
            report.skip("empty question")
            continue
        calls: list[str] = []
        seg: list[int | None] = []
        if cat not in NO_CALL:
            if q["id"] not in answers:
                report.skip("no possible_answer entry")
                continue
            for c in answers[q["id"]][1]:
                (fname, args), = c.items()
                if not isinstance(args, dict):
                    raise WorkloadError(f"arguments of {fname!r} must be an object", file=apath,
                                        line=answers[q["id"]][0], field="ground_truth")
                calls.append(fname)
                seg.append(count_tokens(render_call(fname, args)))
        seg.append(None)
        names = [f["name"] for f in funcs]
        rows.append(ToolUseRow(
            source=NAME, rid=q["id"], group=_group_of(names), prompt_text=prompt,
            prompt_tokens=ptoks, tools=names,
            tools_schema_tokens=count_tokens(json.dumps(funcs, ensure_ascii=False)),
            calls=calls, segment_tokens=seg, return_tokens=[None] * len(calls),
            response_tokens=None, aug_type="other",
            meta={"category": cat, "segment_basis": "call_text_lower_bound",
                  "parallel": cat.startswith(("parallel", "live_parallel"))},
        ))
        report.rows += 1
        report.missing("response_tokens")
        if calls:
            report.missing("return_tokens")


def _docs(root: Path, report: ConversionReport) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for cls, fname in FUNC_DOC_FILES.items():
        out[cls] = [d for _, d in read_jsonl(root / "multi_turn_func_doc" / fname, "name")]
        report.files += 1
    return out


def _multi(
    root: Path, cat: str, docs: dict[str, list[dict[str, Any]]], report: ConversionReport,
    rows: list[ToolUseRow],
) -> None:
    qpath = root / f"{PREFIX}{cat}.json"
    apath = root / "possible_answer" / f"{PREFIX}{cat}.json"
    qs = read_jsonl(qpath)
    answers = {a["id"]: (n, a.get("ground_truth")) for n, a in read_jsonl(apath)}
    report.files += 2
    for n, q in qs:
        report.raw_records += 1
        question, classes = q.get("question"), q.get("involved_classes")
        if not isinstance(question, list) or not isinstance(classes, list):
            raise WorkloadError("needs a list 'question' and a list 'involved_classes'",
                                file=qpath, line=n, field="question")
        unknown = [c for c in classes if c not in docs]
        if unknown:
            raise WorkloadError(f"unknown involved class {unknown[0]!r}", file=qpath, line=n,
                                field="involved_classes")
        if q["id"] not in answers:
            report.skip("no possible_answer entry")
            continue
        an, gt = answers[q["id"]]
        if (not isinstance(gt, list) or len(gt) != len(question)
                or not all(isinstance(t, list) and all(isinstance(c, str) for c in t)
                           for t in gt)):
            raise WorkloadError(f"must be one list of call strings per turn ({len(question)})",
                                file=apath, line=an, field="ground_truth")
        excluded = set(q.get("excluded_function") or [])
        missed: dict[int, list[str]] = {int(k): v for k, v in
                                        (q.get("missed_function") or {}).items()}
        conv = q["id"].rsplit("_", 1)[-1]
        history: list[str] = []
        for t, turn in enumerate(question):
            history.extend(_messages(qpath, n, turn))
            withheld = {f for k, fs in missed.items() if k > t for f in fs}
            funcs, cls_of = [], {}
            for c in classes:
                for f in docs[c]:
                    if f["name"] not in excluded and f["name"] not in withheld:
                        funcs.append(f)
                        cls_of[f["name"]] = c
            prompt = "\n".join(history)
            ptoks = count_tokens(prompt)
            calls_txt = gt[t]
            calls = []
            for s in calls_txt:
                m = _CALL_NAME.match(s)
                if m is None:
                    raise WorkloadError(f"not a call string: {s!r}", file=apath, line=an,
                                        field="ground_truth")
                calls.append(m.group(1))
            history.extend(f"assistant call: {s}" for s in calls_txt)
            if ptoks < 1:
                report.skip("empty prompt")
                continue
            names = [f["name"] for f in funcs]
            rows.append(ToolUseRow(
                source=NAME, rid=f"{q['id']}:{t}", group=f"multi_turn:{conv}",
                prompt_text=prompt, prompt_tokens=ptoks, tools=names,
                tools_schema_tokens=count_tokens(json.dumps(funcs, ensure_ascii=False)),
                calls=calls, segment_tokens=[*(count_tokens(s) for s in calls_txt), None],
                return_tokens=[None] * len(calls), response_tokens=None, aug_type="other",
                meta={"category": cat, "turn": t, "segment_basis": "call_text_lower_bound",
                      "parallel": False, "involved_classes": list(classes),
                      "tool_classes": ["calculator" if cls_of.get(c) in CALCULATOR_CLASSES
                                       else None for c in calls]},
            ))
            report.rows += 1
            report.missing("response_tokens")
            if calls:
                report.missing("return_tokens")


def convert(data_dir: Path) -> tuple[list[ToolUseRow], ConversionReport]:
    """Rows (single-turn questions and multi-turn user turns) and the report for ``bfcl``."""
    root = Path(data_dir) / NAME
    report = ConversionReport(NAME)
    rows: list[ToolUseRow] = []
    for cat in SINGLE_TURN:
        if (root / f"{PREFIX}{cat}.json").is_file():
            _single(root, cat, report, rows)
    docs: dict[str, list[dict[str, Any]]] | None = None
    for cat in MULTI_TURN:
        if (root / f"{PREFIX}{cat}.json").is_file():
            docs = _docs(root, report) if docs is None else docs
            _multi(root, cat, docs, report, rows)
    if not report.files:
        raise FileNotFoundError(f"no {PREFIX}<category>.json files under {root}")
    return rows, report
