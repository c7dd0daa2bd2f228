"""BFCL v4 converter: per-category counts against the raw files, malformed input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from augserve.workload.tokens import count_tokens
from predictors.data import load_source
from predictors.data.bfcl import convert, render_call

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = DATA / "bfcl"

# Questions per single-turn category: SOURCE.md's "Categories copied" list (live_relevance's
# 16 are skipped: no ground truth).
SINGLE = {"simple_python": 400, "simple_java": 100, "simple_javascript": 50, "multiple": 200,
          "parallel": 200, "parallel_multiple": 200, "live_simple": 258, "live_multiple": 1053,
          "live_parallel": 16, "live_parallel_multiple": 24, "irrelevance": 240,
          "live_irrelevance": 884}
# Rows (= user turns) per multi-turn category: sum of len(question) over the 200 entries of
# each file (re-derived below): 734 / 734 / 934 (200 of them the empty "function added" turns
# of miss_func) / 934.
MULTI = {"multi_turn_base": 734, "multi_turn_long_context": 734, "multi_turn_miss_func": 934,
         "multi_turn_miss_param": 934}
# Ground-truth calls per category (possible_answer: entries per line; multi-turn: call strings
# per turn), counted once by hand-run scripts over the raw files and re-derived below.
CALLS = {"simple_python": 400, "simple_java": 100, "simple_javascript": 50, "multiple": 200,
         "parallel": 540, "parallel_multiple": 607, "live_simple": 258, "live_multiple": 1053,
         "live_parallel": 39, "live_parallel_multiple": 55, "irrelevance": 0,
         "live_irrelevance": 0, "multi_turn_base": 1142, "multi_turn_long_context": 1203,
         "multi_turn_miss_func": 1140, "multi_turn_miss_param": 1140}


@pytest.fixture(scope="module")
def converted():
    if not ROOT.is_dir():
        pytest.skip(f"real data absent: {ROOT}")
    return load_source("bfcl", DATA)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_category_counts(converted) -> None:
    rows, rep = converted
    by_cat = Counter(r.meta["category"] for r in rows)
    assert by_cat == {**SINGLE, **MULTI}
    calls = Counter()
    for r in rows:
        calls[r.meta["category"]] += r.num_calls
    assert {c: calls[c] for c in CALLS} == CALLS
    # independent route from the raw files
    for cat, n in SINGLE.items():
        assert len(_lines(ROOT / f"BFCL_v4_{cat}.json")) == n
    for cat, n in MULTI.items():
        assert sum(len(q["question"]) for q in _lines(ROOT / f"BFCL_v4_{cat}.json")) == n
        gt = _lines(ROOT / "possible_answer" / f"BFCL_v4_{cat}.json")
        assert sum(len(t) for a in gt for t in a["ground_truth"]) == CALLS[cat]
    for cat in SINGLE:
        p = ROOT / "possible_answer" / f"BFCL_v4_{cat}.json"
        if p.is_file():
            assert sum(len(a["ground_truth"]) for a in _lines(p)) == CALLS[cat]
    assert len(rows) == rep.rows == 6961
    assert rep.skipped == {"live_relevance: no ground-truth calls": 16}
    assert rep.raw_records == sum(SINGLE.values()) + 16 + 4 * 200
    assert rep.missing_fields == {"response_tokens": 6961,
                                  "return_tokens": sum(r.num_calls > 0 for r in rows)}
    assert len({r.rid for r in rows}) == len(rows)


def test_row_contents(converted) -> None:
    rows, _ = converted
    byid = {r.rid: r for r in rows}
    r = byid["simple_python_0"]
    assert r.calls == ["calculate_triangle_area"]
    assert r.prompt_text == ("user: Find the area of a triangle with a base of 10 units and "
                             "height of 5 units.")
    assert r.segment_tokens == [count_tokens("calculate_triangle_area(base=10, height=5)"), None]
    assert r.return_tokens == [None] and r.response_tokens is None
    q = _lines(ROOT / "BFCL_v4_simple_python.json")[0]
    assert r.tools_schema_tokens == count_tokens(json.dumps(q["function"]))
    assert byid["irrelevance_0"].calls == [] and byid["irrelevance_0"].segment_tokens == [None]
    # miss_func turn 3: the withheld 'sort' is offered from turn 3 on, not before
    t2, t3 = byid["multi_turn_miss_func_0:2"], byid["multi_turn_miss_func_0:3"]
    assert "sort" not in t2.tools and "sort" in t3.tools and t2.calls == []
    assert t3.calls == ["sort"] and t3.prompt_text == t2.prompt_text  # empty turn: no new text
    assert "cp" not in t3.tools  # excluded_function
    assert t3.group == byid["multi_turn_base_0:0"].group == "multi_turn:0"
    mt = byid["multi_turn_base_0:1"]
    assert "assistant call: cd(folder='document')" in mt.prompt_text
    math_rows = [r for r in rows if "MathAPI" in r.meta.get("involved_classes", [])
                 and r.num_calls]
    assert math_rows and any("calculator" in r.meta["tool_classes"] for r in math_rows)


def test_render_call_takes_shortest_acceptable() -> None:
    assert render_call("f", {"a": [1, 2], "b": ["", "x"], "c": [{"k": [3], "j": ["", 4]}]}) \
        == "f(a=1, c={'k': 3})"


def _mk(tmp_path: Path, line: str) -> Path:
    d = tmp_path / "bfcl" / "possible_answer"
    d.mkdir(parents=True, exist_ok=True)
    good = json.dumps({"id": "simple_python_0", "question": [[{"role": "user", "content": "q"}]],
                       "function": [{"name": "f"}]})
    (tmp_path / "bfcl" / "BFCL_v4_simple_python.json").write_text(good + "\n" + line + "\n")
    (d / "BFCL_v4_simple_python.json").write_text(
        json.dumps({"id": "simple_python_0", "ground_truth": [{"f": {"x": [1]}}]}) + "\n")
    return tmp_path


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"BFCL_v4_simple_python\.json:2.*invalid JSON"):
        convert(_mk(tmp_path, '{"id": "simple_python_1", "question": '))
    with pytest.raises(ValueError, match=r"BFCL_v4_simple_python\.json:2.*function"):
        convert(_mk(tmp_path, json.dumps({"id": "simple_python_1", "question": [[]],
                                          "function": "nope"})))
    rows, rep = convert(_mk(tmp_path, json.dumps(
        {"id": "simple_python_1", "question": [[{"role": "user", "content": "q2"}]],
         "function": [{"name": "f"}]})))
    assert len(rows) == 1 and rep.skipped == {"no possible_answer entry": 1}
