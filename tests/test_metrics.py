"""Metrics on hand-made records; expected values computed by hand in the comments."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

from augserve.engine.base import RunResult
from augserve.metrics import (
    CSV_COLUMNS,
    itl_gaps,
    parse_slo,
    per_request_table,
    resume_latencies,
    summarize,
    write_requests_csv,
    write_summary_json,
)
from augserve.records import RequestRecord

approx = pytest.approx


def rec_plain() -> RequestRecord:
    # arrival 1.0, 4 tokens at 1.5 1.6 1.8 2.1, finish 2.1
    # TTFT 0.5, E2E 1.1, TPOT (1.1 - 0.5) / 3 = 0.2, ITL [0.1, 0.2, 0.3], norm 1.1 / 4 = 0.275
    return RequestRecord(
        rid="A",
        aug_type="none",
        arrival_s=1.0,
        prompt_tokens=5,
        expected_output_tokens=4,
        num_calls=0,
        token_s=np.array([1.5, 1.6, 1.8, 2.1]),
        seg_start_idx=[0],
        finished=True,
        finish_s=2.1,
    )


def rec_one_token() -> RequestRecord:
    # arrival 2.0, one token at 2.25: TTFT 0.25, E2E 0.25, no TPOT, no ITL, norm 0.25
    return RequestRecord(
        rid="B",
        aug_type="none",
        arrival_s=2.0,
        prompt_tokens=3,
        expected_output_tokens=1,
        num_calls=0,
        token_s=np.array([2.25]),
        seg_start_idx=[0],
        finished=True,
        finish_s=2.25,
    )


def rec_two_calls() -> RequestRecord:
    # arrival 0.0; seg0 tokens 0.2 0.3 | call0 0.3→1.3 | seg1 1.5 1.6 | call1 1.6→2.6 |
    # seg2 2.7 2.75 2.9; finish 2.9; 7 tokens
    # TTFT 0.2, E2E 2.9, TPOT (2.9 - 0.2) / 6 = 0.45, tool 1.0 + 1.0 = 2.0,
    # e2el_no_tool 0.9, norm 0.9 / 7, resume [1.5 - 1.3, 2.7 - 2.6] = [0.2, 0.1],
    # ITL within segments [0.1, 0.1, 0.05, 0.15] (gaps 0.3→1.5 and 1.6→2.7 excluded)
    return RequestRecord(
        rid="C",
        aug_type="math",
        arrival_s=0.0,
        prompt_tokens=10,
        expected_output_tokens=7,
        num_calls=2,
        token_s=np.array([0.2, 0.3, 1.5, 1.6, 2.7, 2.75, 2.9]),
        seg_start_idx=[0, 2, 4],
        tool_start_s=[0.3, 1.6],
        tool_return_s=[1.3, 2.6],
        kv_modes=["preserve", "discard"],
        finished=True,
        finish_s=2.9,
        preemptions=1,
        recomputed_tokens=12,
        prefix_hit_tokens=8,
    )


def rec_unfinished() -> RequestRecord:
    # arrival 3.0, one token at 3.5, never finished: TTFT 0.5, no E2E
    return RequestRecord(
        rid="D",
        aug_type="qa",
        arrival_s=3.0,
        prompt_tokens=7,
        expected_output_tokens=50,
        num_calls=1,
        token_s=np.array([3.5]),
        seg_start_idx=[0],
        finished=False,
        preemptions=2,
    )


def all_records() -> list[RequestRecord]:
    return [rec_plain(), rec_one_token(), rec_two_calls(), rec_unfinished()]


# ------------------------------------------------------------------------------------ SLO


def test_parse_slo_vllm_form_and_extensions() -> None:
    assert parse_slo("ttft:1000 tpot:50 e2el:20000") == {"ttft": 1000, "tpot": 50, "e2el": 20000}
    assert parse_slo(["norm:200", "e2el_no_tool:5000"]) == {"norm": 200, "e2el_no_tool": 5000}
    assert parse_slo({"ttft": 300}) == {"ttft": 300.0}
    assert parse_slo("ttft:1,tpot:2") == {"ttft": 1.0, "tpot": 2.0}
    assert parse_slo(None) == {} and parse_slo("") == {}


@pytest.mark.parametrize(
    "spec, key",
    [
        ("ttfb:100", "ttfb"),
        ("ttft:0", "ttft"),
        ("tpot:-5", "tpot"),
        ("e2el:abc", "e2el"),
        ({"norm": "x"}, "norm"),
        ({"bogus": 1}, "bogus"),
        ("ttft:nan", "ttft"),
    ],
)
def test_parse_slo_errors_name_the_key(spec: object, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        parse_slo(spec)  # type: ignore[arg-type]


def test_parse_slo_missing_colon() -> None:
    with pytest.raises(ValueError, match="ttft"):
        parse_slo("ttft")


# ------------------------------------------------------------------------ per-request values


def test_per_request_plain_vllm_definitions() -> None:
    row = per_request_table([rec_plain()])[0]
    assert row["ttft_s"] == approx(0.5)
    assert row["e2el_s"] == approx(1.1)
    assert row["tpot_s"] == approx(0.2)
    assert row["tool_time_s"] == 0.0
    assert row["e2el_no_tool_s"] == approx(1.1)
    assert row["norm_latency_s"] == approx(0.275)
    assert row["mean_resume_s"] is None
    assert itl_gaps(rec_plain()) == approx([0.1, 0.2, 0.3])


def test_one_token_request_has_no_tpot_nor_itl() -> None:
    row = per_request_table([rec_one_token()])[0]
    assert row["ttft_s"] == approx(0.25) and row["e2el_s"] == approx(0.25)
    assert row["tpot_s"] is None
    assert itl_gaps(rec_one_token()).size == 0


def test_two_tool_calls() -> None:
    r = rec_two_calls()
    row = per_request_table([r])[0]
    assert row["ttft_s"] == approx(0.2)
    assert row["e2el_s"] == approx(2.9)
    assert row["tpot_s"] == approx(0.45)
    assert row["tool_time_s"] == approx(2.0)
    assert row["e2el_no_tool_s"] == approx(0.9)
    assert row["norm_latency_s"] == approx(0.9 / 7)
    assert resume_latencies(r) == approx([0.2, 0.1])
    assert row["mean_resume_s"] == approx(0.15)
    assert itl_gaps(r) == approx([0.1, 0.1, 0.05, 0.15])
    assert (row["preemptions"], row["recomputed_tokens"], row["prefix_hit_tokens"]) == (1, 12, 8)


def test_resume_skips_call_whose_next_segment_has_not_started() -> None:
    # in tool call 1 (returned at 2.6) but segment 2 has no token yet: one resume only
    r = rec_two_calls()
    r.token_s = r.token_s[:4]
    r.seg_start_idx = [0, 2]  # as an engine writes it: a segment's entry comes with its token
    r.seg_first_s = [0.2, 1.5]
    r.finished = False
    assert resume_latencies(r) == approx([0.2])
    assert itl_gaps(r) == approx([0.1, 0.1])


def test_unfinished_row() -> None:
    row = per_request_table([rec_unfinished()], "ttft:10000")[0]
    assert row["finished"] is False and row["meets_slo"] is False
    assert row["ttft_s"] == approx(0.5)
    assert row["e2el_s"] is None and row["norm_latency_s"] is None


# ------------------------------------------------------------------------------------ summary


def test_summary_latency_stats_in_ms() -> None:
    res = RunResult(records=all_records()[:3], end_s=10.0, stats={"steps": 42})
    s = summarize(res, None)
    # all finished → duration = last finish = 2.9 s (run clock starts at 0)
    assert s["duration"] == approx(2.9)
    assert (s["completed"], s["num_requests"], s["unfinished"]) == (3, 3, 0)
    assert s["request_throughput"] == approx(3 / 2.9)
    # output tokens 4 + 1 + 7 = 12, input 5 + 3 + 10 = 18
    assert s["output_throughput"] == approx(12 / 2.9)
    assert s["total_token_throughput"] == approx(30 / 2.9)
    # TTFT ms [500, 250, 200]: mean 316.67, median 250, p99 = 250 + 0.98 * 250 = 495
    assert s["mean_ttft_ms"] == approx(950 / 3)
    assert s["median_ttft_ms"] == approx(250)
    assert s["p99_ttft_ms"] == approx(495)
    assert s["std_ttft_ms"] == approx(np.std([500, 250, 200]))
    # TPOT ms: 1-token request skipped → [200, 450]
    assert s["mean_tpot_ms"] == approx(325) and s["median_tpot_ms"] == approx(325)
    # ITL ms: A [100, 200, 300] + C [100, 100, 50, 150] → median 100, mean 1000 / 7
    assert s["median_itl_ms"] == approx(100)
    assert s["mean_itl_ms"] == approx(1000 / 7)
    # E2E ms [1100, 250, 2900]; without tools [1100, 250, 900]
    assert s["median_e2el_ms"] == approx(1100)
    assert s["mean_e2el_no_tool_ms"] == approx(2250 / 3)
    # norm ms/token [275, 250, 900 / 7]
    assert s["median_norm_latency_ms"] == approx(250)
    # resume ms [200, 100]
    assert s["mean_resume_ms"] == approx(150) and s["p90_resume_ms"] == approx(190)
    # no SLO: every completed request is good
    assert s["goodput"] == approx(3 / 2.9) and s["slo_attainment"] == 1.0
    assert s["preemptions"] == 1 and s["recomputed_tokens"] == 12
    assert s["engine_steps"] == 42


def test_goodput_with_slo_and_unfinished() -> None:
    res = RunResult(records=all_records(), end_s=4.0)
    # ttft ≤ 300 ms and e2el_no_tool ≤ 1000 ms:
    # A fails (TTFT 500), B passes (250, 250), C passes (200, 900), D unfinished fails
    s = summarize(res, "ttft:300 e2el_no_tool:1000")
    assert s["duration"] == 4.0  # unfinished → result.end_s
    assert (s["completed"], s["unfinished"], s["good_requests"]) == (3, 1, 2)
    assert s["goodput"] == approx(2 / 4.0) and s["effective_throughput"] == s["goodput"]
    assert s["slo_attainment"] == approx(2 / 4)
    assert s["request_throughput"] == approx(3 / 4)
    # latency stats cover completed requests only (D's TTFT 500 ms not included)
    assert s["mean_ttft_ms"] == approx(950 / 3)
    assert s["preemptions"] == 3
    # e2el ≤ 2000 ms: C fails (2900), A and B pass
    assert summarize(res, {"e2el": 2000})["good_requests"] == 2
    # tpot ≤ 1 ms: the 1-token request counts as TPOT 0 (vLLM) → only B passes
    assert summarize(res, "tpot:1")["good_requests"] == 1
    # norm ≤ 200 ms/token: C passes (128.6), A (275) and B (250) fail
    assert summarize(res, "norm:200")["good_requests"] == 1
    assert summarize(res, "ttft:300", duration_s=8.0)["goodput"] == approx(2 / 8)


def test_summary_empty_is_nan_without_warnings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize(RunResult(records=[], end_s=0.0), "ttft:100")
    assert s["completed"] == 0 and math.isnan(s["mean_ttft_ms"]) and math.isnan(s["p99_itl_ms"])
    assert math.isnan(s["slo_attainment"])


def test_csv_and_json(tmp_path) -> None:
    p = write_requests_csv(tmp_path / "req.csv", all_records(), "ttft:300")
    with p.open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 4
    assert [r[0] for r in rows[1:]] == ["A", "B", "C", "D"]
    s = summarize(RunResult(records=all_records(), end_s=4.0, stats={"x": np.int64(3)}), "ttft:300")
    j = write_summary_json(tmp_path / "s.json", s)
    back = json.loads(j.read_text())
    assert back["completed"] == 3 and back["engine_x"] == 3 and back["slo"] == {"ttft": 300.0}


def test_summarize_is_fast() -> None:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(10_000):
        t = np.cumsum(rng.uniform(0.01, 0.05, 500)) + i * 0.01
        calls = i % 3
        seg = [0, 200, 400][: calls + 1]
        recs.append(
            RequestRecord(
                rid=str(i),
                aug_type="x",
                arrival_s=i * 0.01,
                prompt_tokens=100,
                expected_output_tokens=500,
                num_calls=calls,
                token_s=t,
                seg_start_idx=seg,
                tool_start_s=[float(t[s - 1]) for s in seg[1:]],
                tool_return_s=[float(t[s]) - 0.001 for s in seg[1:]],
                finished=True,
                finish_s=float(t[-1]),
            )
        )
    res = RunResult(records=recs, end_s=float(max(r.finish_s for r in recs)))
    t0 = time.perf_counter()
    s = summarize(res, "ttft:1000 tpot:50")
    elapsed = time.perf_counter() - t0
    assert s["completed"] == 10_000
    assert elapsed < 1.0, f"summarize took {elapsed:.2f} s"
