"""API-Bank converter: the real dialogues / level-3 requests and malformed inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from augserve.workload.tokens import count_tokens
from predictors.data import load_source
from predictors.data.api_bank import convert

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOLDER = DATA / "api_bank"


@pytest.fixture(scope="module")
def converted():
    if not FOLDER.is_dir():
        pytest.skip(f"real data absent: {FOLDER}")
    return load_source("api_bank", DATA)


def test_counts(converted):
    rows, report = converted
    dialogues = [r for r in rows if r.meta["level"] in (1, 2)]
    level3 = [r for r in rows if r.meta["level"] == 3]
    # 264 = `find lv1-lv2-samples -name '*.jsonl' | wc -l`; one is empty
    # (`find lv1-lv2-samples -name '*.jsonl' -empty` -> SearchEngine-level-1-1.jsonl)
    assert len(dialogues) == 263 and report.skipped == {"empty_dialogue": 1}
    # 214 / 50 = `ls lv1-lv2-samples/<dir> | wc -l`
    assert Counter(r.meta["level"] for r in dialogues) == {1: 213, 2: 50}
    # 508 = `cat lv1-lv2-samples/*/*.jsonl | grep -c '"role": "API"'`; per-file histogram from
    # `for f in ...; do grep -c '"role": "API"' $f; done | sort -n | uniq -c` (0:3 incl. the empty)
    assert sum(r.num_calls for r in dialogues) == 508
    hist = Counter(r.num_calls for r in dialogues)
    assert hist == {0: 2, 1: 92, 2: 108, 3: 48, 4: 9, 5: 4}
    # jq 'length, ([.[].apis|length]|add)' test-data/level-3.json -> 50, 245
    assert len(level3) == 50 and sum(r.num_calls for r in level3) == 245
    assert Counter(r.num_calls for r in level3) == {4: 34, 5: 1, 6: 6, 7: 4, 8: 5}
    assert sum(r.calls.count("ToolSearcher") for r in level3) == 114
    assert report.raw_records == 264 + 50 and report.rows == len(rows) == 313
    assert len({r.rid for r in rows}) == len(rows)


def test_lengths_known(converted):
    rows, report = converted
    for r in rows:
        assert all(isinstance(x, int) for x in r.return_tokens)
        assert r.segment_tokens[-1] == r.response_tokens
        assert all(isinstance(x, int) for x in r.segment_tokens[:-1])
    # the only dialogue whose last API line is followed by a User turn and no AI turn
    none = [r.rid for r in rows if r.response_tokens is None]
    assert none == ["level-1-given-desc/DeleteAccount-ModifyPassword-GetUserToken-level-2-5"]
    assert report.missing_fields["response_tokens"] == 1
    assert all(r.tools == ["ToolSearcher"] for r in rows if r.meta["level"] in (2, 3))


def test_hand_checked_dialogue(converted):
    rows, _ = converted
    by = {r.rid: r for r in rows}
    r = by["level-1-given-desc/AddAgenda-AddAlarm-GetUserToken-level-2-1"]
    assert r.prompt_text.startswith("Can you add a schedule for me at 2pm on September 12th")
    assert r.meta["user_turns"] == 3
    assert r.calls == ["GetUserToken", "AddAgenda", "AddAlarm"]
    before = [
        "Sure, I can add that schedule for you. When would you like the alarm to remind you?",
        "Absolutely. To schedule the meeting, I first need to authenticate your account. "
        "Please provide your username, email, and password.",
        "Thank you.",
    ]
    assert r.segment_tokens[0] == sum(count_tokens(t) for t in before)
    assert r.response_tokens == count_tokens(
        "Your schedule and alarm have been successfully added."
    )
    assert r.return_tokens == [
        count_tokens('{"token": "o8i7u6y5t4r3e2w1q0"}'),
        count_tokens('"success"'),
        count_tokens('"success"'),
    ]
    assert r.tools == ["AddAgenda", "AddAlarm", "GetUserToken"] and r.tools_schema_tokens > 50
    assert r.group == "api_bank:AddAgenda+AddAlarm"


def test_hand_checked_level3(converted):
    rows, _ = converted
    r = {x.rid: x for x in rows}["level-3/0"]
    assert r.prompt_text == "Query meeting of John and send email reminder to john@example.com."
    assert r.calls[:4] == ["ToolSearcher", "QueryMeeting", "ToolSearcher", "EmailReminder"]
    assert r.segment_tokens[0] == count_tokens(
        "API-Request: [ToolSearcher(keywords='QueryMeeting')]"
    )
    assert r.output_tokens is not None and r.group == "api_bank:EmailReminder+QueryMeeting"


def _dialogue_dir(tmp_path: Path) -> Path:
    d = tmp_path / "api_bank" / "lv1-lv2-samples" / "level-1-given-desc"
    d.mkdir(parents=True)
    return d


def test_malformed_jsonl_raises_with_line(tmp_path):
    d = _dialogue_dir(tmp_path)
    f = d / "Foo-level-1-1.jsonl"
    f.write_text('{"role": "User", "text": "hi"}\n{"role": "AI", "text": \n')
    with pytest.raises(ValueError, match="Foo-level-1-1.jsonl:2"):
        convert(tmp_path)
    f.write_text('{"role": "User", "text": "hi"}\n["not", "an", "object"]\n')
    with pytest.raises(ValueError, match="Foo-level-1-1.jsonl:2"):
        convert(tmp_path)


def test_malformed_level3_raises(tmp_path):
    d = _dialogue_dir(tmp_path)
    (d / "Foo-level-1-1.jsonl").write_text('{"role": "User", "text": "hi"}\n')
    test_dir = tmp_path / "api_bank" / "test-data"
    test_dir.mkdir()
    (test_dir / "level-3.json").write_text('{"requirement": "x"}')
    with pytest.raises(ValueError, match="level-3.json"):
        convert(tmp_path)
    (test_dir / "level-3.json").write_text('[{"requirement": "x", "apis": [')
    with pytest.raises(ValueError, match="level-3.json"):
        convert(tmp_path)


def test_bad_records_are_counted(tmp_path):
    d = _dialogue_dir(tmp_path)
    ok = [
        {"role": "User", "text": "What time is it?"},
        {"role": "API", "api_name": "Foo", "param_dict": {}, "result": {"output": "noon"}},
        {"role": "AI", "text": "It is noon."},
    ]
    broken = [{"role": "User", "text": "hi"}, {"role": "API", "api_name": "Foo"}]
    (d / "Foo-level-1-1.jsonl").write_text("\n".join(json.dumps(x) for x in ok))
    (d / "Foo-level-1-2.jsonl").write_text("\n".join(json.dumps(x) for x in broken))
    (d / "Foo-level-1-3.jsonl").write_text("")
    rows, report = convert(tmp_path)
    assert [r.calls for r in rows] == [["Foo"]]
    assert rows[0].segment_tokens == [0, count_tokens("It is noon.")]
    assert rows[0].return_tokens == [count_tokens('"noon"')]
    assert report.raw_records == 3
    assert report.skipped == {"api_line_missing_field": 1, "empty_dialogue": 1}
    assert report.missing_fields["file:test-data/level-3.json"] == 1
    assert report.missing_fields["tool_description"] == 1
