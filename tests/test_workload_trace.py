"""JSONL trace format: round trip and validation errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload import TraceWorkload, WorkloadError, make_trace, read_trace, write_trace


def _reqs() -> list[AugRequest]:
    return [
        AugRequest("b", 2.5, 100, (Segment(10, ToolCall("math", 1e-4, 20)), Segment(7)),
                   "math", "what is 2+2?", MappingProxyType({"key": "abc", "n": [1, 2]})),
        AugRequest("a", 0.1 + 0.2, 5, (Segment(1),)),
        AugRequest("c", 1.0, 2000, (Segment(3, ToolCall("qa", 0.7123456789, 0)),
                                    Segment(4, ToolCall("qa", 0.0, 5)), Segment(1)), "qa",
                   prefix=(("schema:s", 300), ("row:c", 2000))),
    ]


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    write_trace(p, _reqs())
    assert read_trace(p) == _reqs()
    assert len(p.read_text().splitlines()) == 3


def test_trace_workload_sorts_and_fits(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    write_trace(p, _reqs())
    w = TraceWorkload(p)
    assert [r.rid for r in w.requests(0)] == ["a", "c", "b"] == [r.rid for r in w.requests(9)]
    fitted = make_trace(p, max_model_len=2008).requests(0)
    c = next(r for r in fitted if r.rid == "c")
    assert c.final_context <= 2008 and c.metadata["truncated_to"] == 2008


def _line(**over: object) -> dict:
    d = {"rid": "r", "arrival_s": 0.5, "prompt_tokens": 10,
         "segments": [{"gen_tokens": 3, "call": {"kind": "qa", "duration_s": 0.5,
                                                 "return_tokens": 4}},
                      {"gen_tokens": 2, "call": None}]}
    d.update(over)
    return d


def _seg(**over: object) -> list[dict]:
    s = _line()["segments"]
    s[0]["call"].update(over)
    return s


CASES = [
    ("{not json", None),
    (json.dumps([1, 2]), None),
    (json.dumps({k: v for k, v in _line().items() if k != "arrival_s"}), "arrival_s"),
    (json.dumps(_line(prompt_tokens="10")), "prompt_tokens"),
    (json.dumps(_line(prompt_tokens=True)), "prompt_tokens"),
    (json.dumps(_line(arrival_s=-1.0)), "arrival_s"),
    (json.dumps(_line(rid=7)), "rid"),
    (json.dumps(_line(extra=1)), "extra"),
    (json.dumps(_line(metadata=[1])), "metadata"),
    (json.dumps(_line(prefix={"k": 4})), "prefix"),
    (json.dumps(_line(prefix=[["k", 11]])), "prefix"),  # longer than the prompt
    (json.dumps(_line(prefix=[["k", 6], ["j", 6]])), "prefix"),  # levels must grow
    (json.dumps(_line(prefix=[["", 4]])), "prefix"),
    (json.dumps(_line(prefix=[["k"]])), "prefix"),
    (json.dumps(_line(segments=[])), "segments"),
    (json.dumps(_line(segments=_seg(duration_s=-0.1))), "segments[0].call.duration_s"),
    (json.dumps(_line(segments=_seg(return_tokens=-1))), "segments[0].call.return_tokens"),
    (json.dumps(_line(segments=_seg(kind=3))), "segments[0].call.kind"),
    (json.dumps(_line(segments=[{"gen_tokens": 0, "call": None}])), "segments[0].gen_tokens"),
    (json.dumps(_line(segments=[{"call": None}])), "segments[0].gen_tokens"),
    (json.dumps(_line(segments=[{"gen_tokens": 2, "call": None}, {"gen_tokens": 2}])),
     "segments[0].call"),
    (json.dumps(_line(segments=[{"gen_tokens": 2, "call": {"kind": "qa", "duration_s": 1,
                                                           "return_tokens": 1}}])),
     "segments[0].call"),
    (json.dumps(_line(segments=[{"gen_tokens": 2, "call": {"kind": "qa", "duration_s": 1}},
                                {"gen_tokens": 1}])), "segments[0].call.return_tokens"),
]


@pytest.mark.parametrize(("bad", "field"), CASES)
def test_bad_line_names_file_line_field(tmp_path: Path, bad: str, field: str | None) -> None:
    p = tmp_path / "t.jsonl"
    good = [json.dumps(_line(rid=f"g{i}")) for i in range(3)]
    p.write_text("\n".join([good[0], "", good[1], bad, good[2]]) + "\n")
    with pytest.raises(WorkloadError) as ei:
        read_trace(p)
    e = ei.value
    assert (e.file, e.line, e.field) == (str(p), 4, field)
    assert str(e).startswith(f"{p}:4: ")
    if field is not None:
        assert f"field '{field}'" in str(e)


def test_kinds_max_len_and_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(_line(rid="x")) + "\n" + json.dumps(_line(rid="y")) + "\n")
    assert len(read_trace(p, allowed_kinds={"qa"})) == 2
    with pytest.raises(WorkloadError) as ei:
        read_trace(p, allowed_kinds={"math"})
    assert (ei.value.line, ei.value.field) == (1, "segments[0].call.kind")
    with pytest.raises(WorkloadError) as ei:
        read_trace(p, max_model_len=10)
    assert (ei.value.line, ei.value.field) == (1, "prompt_tokens")
    assert "request 'x'" in str(ei.value)
    assert len(read_trace(p, max_model_len=11)) == 2
    p.write_text(json.dumps(_line(rid="x")) + "\n" + json.dumps(_line(rid="x")) + "\n")
    with pytest.raises(WorkloadError) as ei:
        read_trace(p)
    assert (ei.value.line, ei.value.field) == (2, "rid")


def test_nothing_half_loaded(tmp_path: Path) -> None:
    """A bad last line fails the whole read; no partial list is returned or cached."""
    p = tmp_path / "t.jsonl"
    lines = [json.dumps(_line(rid=f"g{i}")) for i in range(50)]
    p.write_text("\n".join([*lines, json.dumps(_line(arrival_s="late"))]) + "\n")
    result = None
    with pytest.raises(WorkloadError) as ei:
        result = read_trace(p)
    assert result is None and ei.value.line == 51
    with pytest.raises(WorkloadError):
        TraceWorkload(p)
