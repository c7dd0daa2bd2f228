"""Report: the comparison table names every policy; plots write non-empty PNGs."""

from __future__ import annotations

import math

import numpy as np

from augserve.records import RequestRecord
from augserve.report import (
    comparison_table,
    plot_goodput,
    plot_goodput_vs_rate,
    plot_ttft_cdf,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary(goodput: float, att: float) -> dict:
    return {
        "num_requests": 10,
        "completed": 9,
        "goodput": goodput,
        "slo_attainment": att,
        "median_ttft_ms": 120.5,
        "p99_ttft_ms": 900.0,
        "median_tpot_ms": 21.3,
        "median_norm_latency_ms": 30.0,
        "median_resume_ms": math.nan,
        "preemptions": 4,
        "recomputed_tokens": 1234,
        "slo": {"ttft": 1000.0, "tpot": 50.0},
    }


SUMMARIES = {"vllm": _summary(1.5, 0.6), "infercept": _summary(2.0, 0.8), "augserve": {}}


def _records(seed: int, n: int = 30) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = float(i)
        t = arr + np.cumsum(rng.exponential(0.05, 5))
        out.append(
            RequestRecord(
                rid=str(i),
                aug_type="x",
                arrival_s=arr,
                prompt_tokens=10,
                expected_output_tokens=5,
                num_calls=0,
                token_s=t if i % 7 else np.empty(0),
                seg_start_idx=[0],
                finished=bool(i % 7),
                finish_s=float(t[-1]),
            )
        )
    return out


def test_comparison_table_text_and_markdown() -> None:
    txt = comparison_table(SUMMARIES)
    md = comparison_table(SUMMARIES, markdown=True)
    for table in (txt, md):
        for name in SUMMARIES:
            assert name in table.splitlines()[0]
        assert "goodput (req/s)" in table and "9/10" in table and "80.0" in table
    lines = md.splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert set(lines[1]) <= {"|", "-", ":"}
    assert len({len(line) for line in txt.splitlines()}) == 1  # aligned columns


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


def test_plots_write_png(tmp_path) -> None:
    p = plot_ttft_cdf(
        {"vllm": _records(0), "augserve": _records(1), "none": []}, tmp_path / "c.png"
    )
    _assert_png(p)
    _assert_png(plot_goodput(SUMMARIES, tmp_path / "sub" / "g.png"))
    rows = [
        {"policy": pol, "rate": rate, "goodput": g * rate, "slo_attainment": g}
        for pol, g in (("vllm", 0.5), ("augserve", 0.9))
        for rate in (1.0, 2.0, 4.0)
    ]
    _assert_png(plot_goodput_vs_rate(rows, tmp_path / "r.png"))
    _assert_png(plot_goodput_vs_rate(rows, tmp_path / "a.png", metric="slo_attainment"))
