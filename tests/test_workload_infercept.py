"""InferCept/LAMPS JSON loader: the real mixture file and malformed inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from augserve.workload import InferceptSource, WorkloadError, load_infercept_json
from augserve.workload.tokens import count_tokens

DATA = Path(__file__).parents[1].parent / "shared" / "data"
MIX = DATA / "infercept_mix" / "merged_exp_uniform.json"
ONEAPI = DATA / "infercept_mix" / "diverse_oneapi_merged_exp_uniform.json"
needs_data = pytest.mark.skipif(not MIX.is_file(), reason=f"real data absent: {MIX}")


def _raw_calls(path: Path) -> int:
    """Calls counted as InferCept's harness does: api_time or returned length nonzero."""
    n = 0
    for segs in json.loads(path.read_text()).values():
        for s in segs:
            ret = s.get("api_token_length")
            if ret is None and "api_token" in s:
                ret = count_tokens(s["api_token"])
            if s.get("api_time", 0) != 0 or (ret or 0) != 0:
                n += 1
    return n


@needs_data
def test_real_mixture_counts() -> None:
    rs = load_infercept_json(MIX)
    assert len(rs) == 397
    assert Counter(r.aug_type for r in rs) == {
        "math": 99, "qa": 49, "ve": 35, "chatbot": 84, "image": 65, "tts": 65}
    assert sum(r.num_calls for r in rs) == 1841 == _raw_calls(MIX)
    # the trailing calls are kept: TTS, Image, VE and the 19 ALFWorld episodes under int keys
    trailing = Counter(r.aug_type for r in rs if r.metadata["trailing_call"])
    assert trailing == {"tts": 65, "image": 65, "ve": 35, "chatbot": 19}
    for r in rs:
        if r.metadata["trailing_call"]:
            assert r.segments[-1].gen_tokens == 1 and r.segments[-2].call is not None
        assert r.rid == r.metadata["key"]
        assert r.prefix == ((f"infercept:{r.rid}", r.prompt_tokens),)  # drawn again: a hit
        assert all(s.call.kind == r.aug_type for s in r.segments[:-1])
    # four VE segments return -2 tokens in the file: a call returning 0 tokens
    assert sum(r.metadata.get("negative_returns", 0) for r in rs) == 4
    first = next(r for r in rs if r.rid == "0a84bcdff8434b23971032489f44b90a")
    assert first.prompt_tokens == 392 and first.num_calls == 4
    assert [s.gen_tokens for s in first.segments] == [127, 47, 48, 82, 76]
    assert [s.call.return_tokens for s in first.segments[:-1]] == [21, 23, 23, 22]


@needs_data
def test_content_labels_and_oneapi_file() -> None:
    c = Counter(r.aug_type for r in load_infercept_json(MIX, labels="content"))
    assert c == {"math": 99, "qa": 49, "ve": 54, "chatbot": 65, "image": 65, "tts": 65}
    rs = load_infercept_json(ONEAPI)
    assert len(rs) == 397 and sum(r.num_calls for r in rs) == 397


@needs_data
def test_source_draws_with_replacement_deterministically() -> None:
    src = InferceptSource(MIX)
    a = src.draw(np.random.default_rng(3), 300)
    b = src.draw(np.random.default_rng(3), 300)
    c = src.draw(np.random.default_rng(4), 300)
    assert [r.rid for r in a] == [r.rid for r in b] != [r.rid for r in c]
    assert len({r.rid for r in a}) < 300  # with replacement: repeats (without: none)


def _write(tmp_path: Path, obj: object | str) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=1))
    return p


GOOD = [{"prompt_tokens": 10, "completion_tokens": 5, "api_time": 0.5, "api_token_length": 3},
        {"prompt_tokens": 18, "completion_tokens": 4}]


def test_small_file_rules(tmp_path: Path) -> None:
    p = _write(tmp_path, {
        "a": GOOD,
        # api_time 0 with a return is a call; the call on the last segment is trailing
        "1_1": [{"prompt": "hello there", "completion": "", "api_token": "ok", "api_time": 0}],
        # api_time 0 and return 0 = no call: merged into the next segment
        "9": [{"prompt_tokens": 4, "completion_tokens": 2, "api_time": 0, "api_token_length": 0},
              {"prompt_tokens": 6, "completion_tokens": 3}],
    })
    a, tts, chat = load_infercept_json(p)
    assert a.num_calls == 1 and a.segments[0].call.duration_s == 0.5 and a.aug_type == "other"
    assert tts.aug_type == "tts" and tts.num_calls == 1 and tts.metadata["trailing_call"]
    assert tts.segments[0].gen_tokens == 1 and tts.metadata["zero_completions"] == 1
    assert tts.prompt_tokens == count_tokens("hello there") and tts.prompt_text == "hello there"
    assert chat.num_calls == 0 and chat.segments[0].gen_tokens == 5


@pytest.mark.parametrize(
    ("req", "field", "seg"),
    [
        ({"prompt_tokens": 3}, None, None),  # not a list
        ([{"prompt_tokens": 3, "api_time": 1.0, "api_token_length": 2}], "completion_tokens", 0),
        ([GOOD[0], {"prompt_tokens": 3, "completion_tokens": 2, "api_time": -1.0,
                    "api_token_length": 2}], "api_time", 1),
        ([GOOD[0], {"prompt_tokens": 3, "completion_tokens": "x"}], "completion_tokens", 1),
        ([{"prompt_tokens": 3, "completion_tokens": 2, "api_time": "slow",
           "api_token_length": 2}], "api_time", 0),
        ([{"prompt_tokens": 3, "completion_tokens": 2, "api_time": 1.0}], "api_token_length", 0),
        ([{"prompt_tokens": 3, "completion_tokens": 2, "api_token_length": 4}], "api_time", 0),
        ([{"prompt_tokens": 3, "completion_tokens": 2, "tool": "x"}], "tool", 0),
        ([{"completion_tokens": 2}], "prompt_tokens", 0),
        ([], None, None),
        (["text"], None, 0),
    ],
)
def test_malformed_entries_name_file_line_field(
    tmp_path: Path, req: object, field: str | None, seg: int | None
) -> None:
    p = _write(tmp_path, {"ok1": GOOD, "badkey": req, "ok2": GOOD})
    with pytest.raises(WorkloadError) as ei:
        load_infercept_json(p)
    e = ei.value
    assert e.file == str(p) and e.field == field
    lines = p.read_text().splitlines()
    assert lines[e.line - 1].lstrip().startswith('"badkey":')
    assert f"{p}:{e.line}: " in str(e) and "request 'badkey'" in str(e)
    if field is not None:
        assert f"field '{field}'" in str(e)
    if seg is not None:
        assert f"segment {seg}" in str(e)


def test_negative_api_time_message(tmp_path: Path) -> None:
    bad = [GOOD[0], {"prompt_tokens": 3, "completion_tokens": 2, "api_time": -0.5,
                     "api_token_length": 2}, GOOD[1]]
    p = _write(tmp_path, {"x": GOOD, "abc": bad})
    with pytest.raises(WorkloadError, match=r"bad\.json:\d+: field 'api_time' of request 'abc' "
                                            r"segment 1: must be >= 0"):
        load_infercept_json(p)


@pytest.mark.parametrize("text", ['{"a": [', "[1, 2]", '{"a": 1, "a": 2}', "{}"])
def test_broken_files(tmp_path: Path, text: str) -> None:
    with pytest.raises(WorkloadError) as ei:
        load_infercept_json(_write(tmp_path, text))
    assert ei.value.file is not None and ei.value.line is not None
