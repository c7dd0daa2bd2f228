"""infercept_mix converter: rows mirror the InferCept loader; counts from the raw JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from predictors.data import load_source
from predictors.data.infercept_mix import convert

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIX = DATA / "infercept_mix" / "merged_exp_uniform.json"


@pytest.fixture(scope="module")
def converted():
    if not MIX.is_file():
        pytest.skip(f"real data absent: {MIX}")
    return load_source("infercept_mix", DATA)


def test_counts_and_fields(converted) -> None:
    rows, rep = converted
    raw = json.loads(MIX.read_text())
    # Independent route: 397 keys; 1841 calls = segments whose api_time or api_token_length is
    # nonzero, or that carry an api_token text (SOURCE.md: 397 requests, 1,841 API calls).
    n_calls = sum(1 for segs in raw.values() for s in segs
                  if s.get("api_time", 0) != 0 or s.get("api_token_length", 0) != 0
                  or s.get("api_token"))
    assert len(raw) == 397 and n_calls == 1841
    assert len(rows) == rep.rows == rep.raw_records == 397 and rep.skipped == {}
    assert sum(r.num_calls for r in rows) == 1841
    assert Counter(r.aug_type for r in rows) == {
        "math": 99, "qa": 49, "ve": 35, "chatbot": 84, "image": 65, "tts": 65}
    # rows without prompt text = keys whose first segment has prompt_tokens, not a prompt
    no_text = sum(1 for segs in raw.values() if not isinstance(segs[0].get("prompt"), str))
    assert rep.missing_fields == {"prompt_text": no_text}
    for r in rows:
        assert r.calls == [r.aug_type] * r.num_calls
        assert len(r.meta["tool_s"]) == r.num_calls
        assert all(t >= 0 for t in r.meta["tool_s"])
        assert r.group == f"{r.aug_type}:{r.rid}"
        assert r.response_tokens == r.segment_tokens[-1] is not None
        assert all(x is not None for x in r.return_tokens)
    first = next(r for r in rows if r.rid == "0a84bcdff8434b23971032489f44b90a")
    assert first.prompt_tokens == 392 and first.segment_tokens == [127, 47, 48, 82, 76]
    assert first.return_tokens == [21, 23, 23, 22]
    assert first.meta["tool_s"][0] == raw[first.rid][0]["api_time"]


def test_malformed_file(tmp_path: Path) -> None:
    d = tmp_path / "infercept_mix"
    d.mkdir()
    (d / "merged_exp_uniform.json").write_text('{"a": [\n{"prompt_tokens": -1}]}')
    with pytest.raises(ValueError, match=r"merged_exp_uniform\.json"):
        convert(tmp_path)
    (d / "merged_exp_uniform.json").write_text('{"a": [\n')
    with pytest.raises(ValueError, match=r"merged_exp_uniform\.json:2"):
        convert(tmp_path)
