"""ToolTalk converter: counts checked against the raw files, malformed input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from augserve.workload.tokens import count_tokens
from predictors.data import load_source
from predictors.data.tooltalk import convert

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = DATA / "tooltalk"


@pytest.fixture(scope="module")
def converted():
    if not ROOT.is_dir():
        pytest.skip(f"real data absent: {ROOT}")
    return load_source("tooltalk", DATA)


def test_counts_match_raw_files(converted) -> None:
    rows, rep = converted
    files = sorted(ROOT.glob("*/*.json"))
    # Independent route: regex over the raw text (no JSON parsing, no turn logic).
    # SOURCE.md: 78 conversations, 273 user turns, 266 tool calls; the raw text has 230
    # '"role": "assistant"' (= 66+103+40+10+6+2+2+1 turns of the SOURCE.md histogram).
    raw = [p.read_text() for p in files]
    users = sum(len(re.findall(r'"role":\s*"user"', t)) for t in raw)
    assistants = sum(len(re.findall(r'"role":\s*"assistant"', t)) for t in raw)
    api_calls = sum(len(re.findall(r'"api_name":', t)) for t in raw)
    assert (len(files), users, assistants, api_calls) == (78, 273, 230, 266)
    assert len(rows) == rep.rows == assistants == 230
    assert rep.files == rep.raw_records == 78
    assert sum(r.num_calls for r in rows) == 266
    # per-assistant-turn histogram of SOURCE.md
    assert Counter(r.num_calls for r in rows) == {0: 66, 1: 103, 2: 40, 3: 10, 4: 6, 5: 2,
                                                  6: 2, 7: 1}
    # 273 user turns = 230 answered + 42 final unanswered + 1 followed by another user turn
    assert rep.skipped == {"final user turn without an assistant reply": 42,
                           "user turn followed by another user turn": 1}
    assert rep.missing_fields == {"tools_schema_tokens": 230}
    assert len({r.rid for r in rows}) == 230
    assert len({r.group for r in rows}) == 78


def test_row_contents(converted) -> None:
    rows, _ = converted
    r = next(r for r in rows if r.rid == "easy/ChangePassword-easy:7")
    d = json.loads((ROOT / "easy" / "ChangePassword-easy.json").read_text())
    turn = d["conversation"][7]
    assert r.calls == [a["request"]["api_name"] for a in turn["apis"]] == ["ChangePassword"]
    assert r.response_tokens == r.segment_tokens[-1] == count_tokens(turn["text"])
    assert r.segment_tokens[0] == count_tokens(json.dumps(turn["apis"][0]["request"]))
    assert r.return_tokens == [count_tokens(json.dumps(turn["apis"][0]["response"]))]
    assert r.prompt_text.endswith("user: " + d["conversation"][6]["text"])
    assert r.prompt_tokens == count_tokens(r.prompt_text)
    assert r.group == d["conversation_id"]
    # all 10 AccountTools tools are offered (suite map learned from easy/)
    assert len(r.tools) == 10 and "UserLogin" in r.tools
    # every row: lengths known, tools include the calls made
    for r in rows:
        assert r.output_tokens is not None and all(x is not None for x in r.return_tokens)
        assert set(r.calls) <= set(r.tools)
    assert len({t for r in rows for t in r.tools}) == 28


def test_malformed_file_names_file(tmp_path: Path) -> None:
    (tmp_path / "tooltalk" / "easy").mkdir(parents=True)
    bad = tmp_path / "tooltalk" / "easy" / "bad.json"
    bad.write_text('{"conversation_id": "x",\n "conversation": [}')
    with pytest.raises(ValueError, match=r"bad\.json:2"):
        convert(tmp_path)
    bad.write_text(json.dumps({"conversation_id": "x", "suites_used": [], "apis_used": [],
                               "conversation": [{"role": "robot", "text": "hi"}]}))
    with pytest.raises(ValueError, match=r"bad\.json.*role"):
        convert(tmp_path)


def test_small_conversation(tmp_path: Path) -> None:
    (tmp_path / "tooltalk" / "easy").mkdir(parents=True)
    conv = {"conversation_id": "c1", "suites_used": ["Alarm"], "apis_used": ["AddAlarm"],
            "conversation": [
                {"role": "user", "text": "wake me at 7"},
                {"role": "assistant", "text": "done", "apis": [
                    {"request": {"api_name": "AddAlarm", "parameters": {"time": "07:00"}},
                     "response": None, "exception": "bad time"}]},
                {"role": "user", "text": "thanks"}]}
    (tmp_path / "tooltalk" / "easy" / "a.json").write_text(json.dumps(conv))
    rows, rep = convert(tmp_path)
    assert len(rows) == 1 and rows[0].calls == ["AddAlarm"]
    assert rows[0].return_tokens == [count_tokens("bad time")]
    assert rep.skipped == {"final user turn without an assistant reply": 1}
