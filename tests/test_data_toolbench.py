"""ToolBench CoT converter: the real release and malformed inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from augserve.workload.tokens import count_tokens
from predictors.data import load_source
from predictors.data.toolbench import convert

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOLDER = DATA / "toolbench_cot"


@pytest.fixture(scope="module")
def converted():
    if not FOLDER.is_dir():
        pytest.skip(f"real data absent: {FOLDER}")
    return load_source("toolbench_cot", DATA)


def test_row_count_and_call_histogram(converted):
    rows, report = converted
    # 600 = `for f in G*.json; do jq length $f; done | paste -sd+ | bc`
    assert len(rows) == report.rows == report.raw_records == 600
    assert report.files == 6 and report.skipped == {}
    # jq -r '.[] | [.. | objects | select(.role? == "tool") | .message
    #   | select(startswith("{'name': 'Finish'") | not)] | length' G*.json | sort -n | uniq -c
    hist = Counter(r.num_calls for r in rows)
    assert hist == {0: 2, 1: 42, 2: 140, 3: 88, 4: 80, 5: 63, 6: 185}
    assert len({r.rid for r in rows}) == 600  # query id 19191 is in two files


def test_final_status_and_missing(converted):
    rows, report = converted
    status = Counter(r.meta["final_status"] for r in rows)
    # jq: 224 rows with final_answer == "" and no give_up in any tool node; 80 with
    # give_up_and_restart in final_answer (72) or, when it is "", in the Finish node (8)
    assert status["step_limit"] == 224 and status["give_up"] == 80
    # python: nonempty final_answer containing give_answer that json.loads(strict=False) parses
    assert status["answer"] == 288
    assert status["malformed_final_answer"] == 8
    assert report.missing_fields["response_tokens"] == 600 - 288
    for r in rows:
        assert r.return_tokens == [None] * r.num_calls
        assert r.segment_tokens[:-1] == [None] * r.num_calls
        assert r.segment_tokens[-1] == r.response_tokens
        assert (r.response_tokens is not None) == (r.meta["final_status"] == "answer")
        assert r.tools[-1] == "Finish" and r.tools_schema_tokens > 0


def test_hand_checked_row(converted):
    rows, _ = converted
    by = {r.rid: r for r in rows}
    r = by["G1_instruction/42700"]
    assert r.prompt_text.startswith("I'm working on a research project about different car models")
    assert r.calls == ["vin_decode_for_vin_decoder_v4"] * 3
    raw = json.loads((FOLDER / "G1_instruction.json").read_text())["42700"]
    final = json.loads(raw["answer"]["final_answer"])["final_answer"]
    assert final.startswith("The decoded information for the VINs are as follows")
    assert r.response_tokens == count_tokens(final)
    assert r.meta["rapidapi_tools"] == ["vin_decoder_v4"]
    assert by["G1_instruction/60362"].meta["final_status"] == "give_up"
    assert by["G1_tool/19191"].prompt_text != by["G2_instruction/19191"].prompt_text


def test_groups_do_not_share_tools(converted):
    rows, _ = converted
    owner: dict[str, str] = {}
    for r in rows:
        for t in r.meta["rapidapi_tools"]:
            assert owner.setdefault(t, r.group) == r.group
    assert 100 < len({r.group for r in rows}) < 600


def _record(query: str = "hello") -> dict:
    node = {"role": "tool", "message": "{'name': 'f_for_t', 'arguments': '{}'", "next": []}
    return {
        "query": query,
        "available_tools": [
            {"name": "f_for_t", "description": 'This is the subfunction for tool "t"'},
            {"name": "Finish", "description": "finish"},
        ],
        "answer": {
            "total_steps": 2,
            "final_answer": json.dumps({"return_type": "give_answer", "final_answer": "done"}),
            "answer_details": [{"role": "system", "message": "", "next": [node]}],
        },
    }


def test_malformed_files_raise(tmp_path):
    folder = tmp_path / "toolbench_cot"
    folder.mkdir()
    bad = folder / "G1_bad.json"
    bad.write_text('{"1": {"query": "x"')
    with pytest.raises(ValueError, match="G1_bad.json"):
        convert(tmp_path)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="G1_bad.json.*object"):
        convert(tmp_path)


def test_missing_field_is_counted(tmp_path):
    folder = tmp_path / "toolbench_cot"
    folder.mkdir()
    broken = _record()
    del broken["answer"]
    (folder / "G1_x.json").write_text(json.dumps({"1": _record(), "2": broken}))
    rows, report = convert(tmp_path)
    assert [r.rid for r in rows] == ["G1_x/1"]
    assert rows[0].calls == ["f_for_t"] and rows[0].response_tokens == count_tokens("done")
    assert report.raw_records == 2 and report.skipped == {"missing_field:answer": 1}
