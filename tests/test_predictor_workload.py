"""Dataset workloads: rows -> engine scripts, the dataset source, the factory, serve.py, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from augserve.workload import read_trace
from augserve.workload.sampled import SampledWorkload
from predictors.schema import ToolUseRow
from predictors.workload import (
    DatasetSource,
    LengthPools,
    ToolTimeModel,
    make_dataset_workload,
    rows_to_requests,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
KEYS = {"source", "tools", "tools_schema_tokens", "script_rid", "aug_type"}


def _need(*names: str) -> None:
    for n in names:
        if not (DATA / n).is_dir():
            pytest.skip(f"real data absent: {DATA / n}")


def _row(source: str, rid: str, calls: list[str], seg, ret, **kw) -> ToolUseRow:
    return ToolUseRow(source=source, rid=rid, group=rid, prompt_text="hi", prompt_tokens=5,
                      tools=sorted(set(calls)) or ["t"], tools_schema_tokens=kw.pop("sch", 7),
                      calls=calls, segment_tokens=seg, return_tokens=ret,
                      response_tokens=seg[-1], **kw)


def test_rows_to_requests_fills_and_structure() -> None:
    rows = [
        _row("a", "r1", ["search", "math.add"], [10, 20, 30], [4, 6]),
        _row("a", "r2", ["search"], [None, None], [None]),
        _row("b", "r3", ["x"], [3, None], [None]),  # b has no responses/returns: pooled
        _row("c", "r4", [], [None], []),
    ]
    tt = ToolTimeModel()
    reqs = rows_to_requests(rows, tt, np.random.default_rng(0))
    r1, r2, r3, r4 = reqs
    assert r1.prompt_tokens == 5 + 7 and r1.metadata["prompt_text_tokens"] == 5
    assert [s.gen_tokens for s in r1.segments] == [10, 20, 30]
    assert [s.call.kind for s in r1.segments[:-1]] == ["search", "math.add"]
    assert [s.call.return_tokens for s in r1.segments[:-1]] == [4, 6]
    assert r1.metadata["tool_classes"] == ("web_api", "calculator")
    assert r1.metadata["filled"] == {}
    assert r2.segments[0].gen_tokens in (10, 20) and r2.segments[1].gen_tokens == 30
    assert r2.segments[0].call.return_tokens in (4, 6)
    assert r2.metadata["filled"] == {"segment_tokens": "dataset", "response_tokens": "dataset",
                                     "return_tokens": "dataset"}
    assert r3.metadata["filled"] == {"response_tokens": "pooled", "return_tokens": "pooled"}
    assert r3.segments[-1].gen_tokens == 30 and r3.segments[0].call.return_tokens in (4, 6)
    assert r4.num_calls == 0
    for r, row in zip(reqs, rows, strict=True):
        assert KEYS <= set(r.metadata) and r.metadata["script_rid"] == row.rid == r.rid
        assert r.metadata["tools"] == tuple(row.tools) and r.prompt_text == "hi"
    only_c = rows_to_requests([rows[3]], tt, np.random.default_rng(0), default_segment_tokens=9)
    assert only_c[0].segments[0].gen_tokens == 9
    assert only_c[0].metadata["filled"] == {"response_tokens": "default"}


def test_prompt_prefix_keys_schema_then_row() -> None:
    # the schemas of the offered tools come first: rows offering the same tools share them;
    # the whole prompt is keyed by the row (a row drawn twice has the same prompt)
    rows = [_row("a", "r1", ["search"], [3, 4], [2]), _row("a", "r2", ["search"], [3, 4], [2]),
            _row("a", "r3", ["math.add"], [3, 4], [2]), _row("b", "r4", [], [5], [], sch=0),
            _row("a", "r5", ["search"], [3, 4], [2], sch=9)]  # same names, other schemas
    r1, r2, r3, r4, r5 = rows_to_requests(rows, ToolTimeModel(), np.random.default_rng(0))
    assert r1.prefix[0][1] == 7 and r1.prefix[1] == ("row:a:r1", 12)
    assert r1.prefix[0] == r2.prefix[0] != r3.prefix[0]
    assert r5.prefix[0][0] != r1.prefix[0][0]
    assert r1.prefix[1] != r2.prefix[1]
    assert r4.prefix == (("row:b:r4", 5),)


def test_tool_time_model() -> None:
    tt = ToolTimeModel()
    rng = np.random.default_rng(1)
    web = np.array([tt.draw("web_api", rng) for _ in range(4000)])
    calc = np.array([tt.draw("calculator", rng) for _ in range(4000)])
    assert (web > 0).all() and (calc > 0).all()
    assert abs(np.median(web) / 0.734 - 1) < 0.03 and abs(np.log(web).std() - 0.211) < 0.01
    assert abs(np.median(calc) / 7.8e-5 - 1) < 0.05
    assert tt.tool_class("QueryCalendar", "tooltalk") == "web_api"
    assert tt.tool_class("calculate_triangle_area", "bfcl") == "calculator"
    assert tt.tool_class("qa", "infercept_mix") == "empirical:qa"
    assert tt.tool_class("add", "bfcl", "calculator") == "calculator"
    with pytest.raises(ValueError):
        ToolTimeModel(web_median_s=0)


def test_tool_time_constants_match_infercept_data() -> None:
    """The lognormal parameters are the fits to InferCept's measured Math / QA durations."""
    _need("infercept_mix")
    raw = json.loads((DATA / "infercept_mix" / "merged_exp_uniform.json").read_text())
    hexkeys = [k for k in raw if len(k) == 32]
    by: dict[str, list[float]] = {"math": [], "qa": []}
    for k in hexkeys:
        times = [s["api_time"] for s in raw[k] if "api_time" in s]
        kind = "qa" if any(t >= 0.01 for t in times) else "math"
        by[kind].extend(t for t in times if t > 0)
    tt = ToolTimeModel()
    for kind, med, sig in (("math", tt.calc_median_s, tt.calc_sigma),
                           ("qa", tt.web_median_s, tt.web_sigma)):
        logs = np.log(by[kind])
        assert math.exp(logs.mean()) == pytest.approx(med, rel=0.01)
        assert logs.std() == pytest.approx(sig, abs=0.001)
    assert (len(by["math"]), len(by["qa"])) == (268, 144)


def test_infercept_rows_use_recorded_durations() -> None:
    _need("infercept_mix")
    src = DatasetSource(["infercept_mix"], DATA, seed=0)
    raw = json.loads((DATA / "infercept_mix" / "merged_exp_uniform.json").read_text())
    s = next(x for x in src.scripts if x.rid == "0a84bcdff8434b23971032489f44b90a")
    assert [c.call.duration_s for c in s.segments[:-1]] == [g["api_time"]
                                                            for g in raw[s.rid][:-1]]
    assert set(s.metadata["tool_classes"]) == {"recorded"}
    # without the recorded values, durations are resampled from the same kind's recordings
    assert LengthPools.from_rows([]).tool_s == {}
    alt = DatasetSource(["infercept_mix"], DATA, seed=0,
                        tool_time=ToolTimeModel(use_recorded=False))
    qa_times = {g["api_time"] for k, v in raw.items() if len(k) == 32 for g in v
                if g.get("api_time", 0) >= 0.01}
    for x in alt.scripts:
        if x.aug_type == "qa":
            assert all(c.call.duration_s in qa_times or c.call.duration_s < 0.01
                       for c in x.segments[:-1])
            assert set(x.metadata["tool_classes"]) == {"empirical:qa"}


def test_dataset_workload_deterministic_and_valid() -> None:
    _need("tooltalk", "bfcl", "infercept_mix")
    srcs = ["tooltalk", "bfcl", "infercept_mix"]
    wl = make_dataset_workload(srcs, rate=4.0, duration_s=200, data_dir=DATA)
    assert isinstance(wl, SampledWorkload)
    a, b = wl.requests(3), wl.requests(3)
    c = make_dataset_workload(srcs, rate=4.0, duration_s=200, data_dir=DATA).requests(4)
    assert [(r.rid, r.arrival_s, r.segments) for r in a] == \
        [(r.rid, r.arrival_s, r.segments) for r in b]
    assert [r.rid for r in a] != [r.rid for r in c]
    assert len(a) > 400 and {r.metadata["source"] for r in a} == set(srcs)
    tt = ToolTimeModel()
    for r in a:  # AugRequest validated itself on construction
        assert KEYS <= set(r.metadata)
        assert r.aug_type == r.metadata["aug_type"]
        assert r.prompt_tokens == (r.metadata["prompt_text_tokens"]
                                   + r.metadata["tools_schema_tokens"])
        for s, cls in zip(r.segments[:-1], r.metadata["tool_classes"], strict=True):
            assert s.call.duration_s >= 0
            if cls in ("web_api", "calculator"):
                assert s.call.duration_s > 0
                med = tt.web_median_s if cls == "web_api" else tt.calc_median_s
                assert 0.05 * med < s.call.duration_s < 20 * med  # within ~7 sigma
            else:
                assert cls == "recorded" and r.metadata["source"] == "infercept_mix"
        if r.metadata["source"] == "bfcl":
            assert "response_tokens" in r.metadata["filled"]
    # a different pool seed changes filled lengths / tool times, not the row draws
    d = make_dataset_workload(srcs, rate=4.0, duration_s=200, data_dir=DATA,
                              seed_scripts=1).requests(3)
    assert [r.rid for r in d] == [r.rid for r in a]
    assert [r.segments for r in d] != [r.segments for r in a]


def test_max_model_len_drops_and_mix() -> None:
    _need("tooltalk")
    src = DatasetSource("tooltalk", DATA, max_model_len=300)
    assert src.dropped["tooltalk"] > 0
    assert all(s.prompt_tokens < 300 for s in src.scripts)
    assert len(src.scripts) + src.dropped["tooltalk"] == 230
    with pytest.raises(ValueError, match="mix"):
        DatasetSource("tooltalk", DATA, mix="bogus")
    with pytest.raises(ValueError, match="unknown dataset"):
        DatasetSource(["nope"], DATA)


def test_toolbench_if_available() -> None:
    pytest.importorskip("predictors.data.toolbench")
    _need("toolbench_cot")
    reqs = make_dataset_workload("toolbench_cot", rate=2.0, duration_s=60,
                                 data_dir=DATA).requests(0)
    assert reqs and all(KEYS <= set(r.metadata) for r in reqs)


def test_cli_writes_a_readable_trace(tmp_path: Path) -> None:
    _need("tooltalk")
    out = tmp_path / "trace.jsonl"
    p = subprocess.run([sys.executable, "-m", "predictors.workload", "--sources", "tooltalk",
                        "--rate", "2", "--duration", "60", "--out", str(out),
                        "--data-dir", str(DATA)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    reqs = read_trace(out)
    assert len(reqs) > 50 and all(r.metadata["source"] == "tooltalk" for r in reqs)
    assert all(KEYS <= set(r.metadata) for r in reqs)


def test_serve_runs_tooltalk(tmp_path: Path) -> None:
    _need("tooltalk")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, str(ROOT / "serve.py"), "workload=tooltalk",
                        "workload.duration_s=30", "policy=vllm", "progress=false",
                        f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "vllm" / "summary.json").read_text())
    assert s["num_requests"] > 0
