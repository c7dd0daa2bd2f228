"""Reports over run summaries: a side-by-side text/markdown table and PNG plots (matplotlib Agg).

Inputs are the dicts of :func:`augserve.metrics.summarize` (latencies in ms, goodput in req/s)
and :class:`~augserve.records.RequestRecord` lists (times in s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from augserve.records import RequestRecord  # noqa: E402

_NA = "-"


def _fmt(fmt: str) -> Callable[[Mapping[str, Any], str], str]:
    def f(s: Mapping[str, Any], key: str) -> str:
        v = s.get(key)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return _NA
        return format(int(v) if fmt == "d" else float(v), fmt)

    return f


def _completed(s: Mapping[str, Any], _key: str) -> str:
    if "completed" not in s:
        return _NA
    total = s.get("num_requests")
    return f"{s['completed']}/{total}" if total is not None else str(s["completed"])


def _percent(s: Mapping[str, Any], key: str) -> str:
    v = s.get(key)
    if v is None or not math.isfinite(float(v)):
        return _NA
    return f"{100.0 * float(v):.1f}"


#: (row label, summary key, formatter)
TABLE_ROWS: tuple[tuple[str, str, Callable[[Mapping[str, Any], str], str]], ...] = (
    ("completed", "completed", _completed),
    ("goodput (req/s)", "goodput", _fmt(".3f")),
    ("SLO attainment (%)", "slo_attainment", _percent),
    ("TTFT p50 (ms)", "median_ttft_ms", _fmt(".1f")),
    ("TTFT p99 (ms)", "p99_ttft_ms", _fmt(".1f")),
    ("TPOT p50 (ms)", "median_tpot_ms", _fmt(".2f")),
    ("norm latency p50 (ms/tok)", "median_norm_latency_ms", _fmt(".2f")),
    ("resume p50 (ms)", "median_resume_ms", _fmt(".1f")),
    ("preemptions", "preemptions", _fmt("d")),
    ("recomputed tokens", "recomputed_tokens", _fmt("d")),
)


def comparison_table(summaries: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Side-by-side table of summaries, one column per policy (missing values shown as '-').

    ``markdown=True`` gives a GitHub pipe table; otherwise an aligned plain-text table.
    """
    names = list(summaries)
    header = ["metric", *names]
    body = [[label, *(fmt(summaries[n], key) for n in names)] for label, key, fmt in TABLE_ROWS]
    widths = [max(len(row[j]) for row in [header, *body]) for j in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(cells)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded)

    if markdown:
        # first column left-aligned, numbers right-aligned
        cells = [
            ":" + "-" * (w + 1) if j == 0 else "-" * (w + 1) + ":" for j, w in enumerate(widths)
        ]
        rule = "|" + "|".join(cells) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _legend(ax: Any) -> None:
    # beside the axes: with nine policies an inside legend hides the curves
    ax.legend(title="policy", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_ttft_cdf(
    records_by_policy: Mapping[str, Sequence[RequestRecord]], path: str | Path
) -> Path:
    """CDF of TTFT (ms, log x) per policy over ALL requests: requests that never emitted a
    token count as infinite, so a curve tops out at the fraction that got a first token."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lo = math.inf
    for name, recs in records_by_policy.items():
        ttft = np.array(
            [(r.token_s[0] - r.arrival_s) * 1000.0 for r in recs if r.token_s.shape[0]], float
        )
        ttft = np.sort(np.maximum(ttft, 1e-3))  # log axis: clip 0 to 1 µs
        total = max(len(recs), 1)
        if ttft.size:
            lo = min(lo, float(ttft[0]))
            y = np.arange(1, ttft.size + 1) / total
            ax.step(np.r_[ttft[0], ttft], np.r_[0.0, y], where="post", label=f"{name}")
        else:
            ax.plot([], [], label=f"{name} (no tokens)")
    ax.set_xscale("log")
    if math.isfinite(lo):
        ax.set_xlim(left=lo / 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time to first token (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFT CDF per policy\n(requests with no token yet count as never served)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def _slo_text(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    for s in summaries.values():
        slo = s.get("slo")
        if slo:
            return " ".join(f"{k}:{v:g}" for k, v in slo.items()) + " (ms)"
    return ""


def plot_goodput(summaries: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Bar chart of goodput (req/s) per policy, each bar annotated with its SLO attainment."""
    names = list(summaries)
    vals = [float(summaries[n].get("goodput") or 0.0) for n in names]
    vals = [v if math.isfinite(v) else 0.0 for v in vals]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 4.5))
    x = np.arange(len(names))
    bars = ax.bar(x, vals, color=plt.cm.tab10(np.arange(len(names)) % 10))
    for bar, n in zip(bars, names, strict=True):
        att = _percent(summaries[n], "slo_attainment")
        ax.annotate(
            f"{att}% SLO" if att != _NA else "SLO n/a",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(x, names, rotation=20 if len(names) > 4 else 0)
    ax.set_ylim(0, max(vals + [1e-9]) * 1.18)
    ax.set_xlabel("policy")
    ax.set_ylabel("goodput (req/s)")
    slo = _slo_text(summaries)
    ax.set_title("Goodput per policy" + (f"\nSLO {slo}" if slo else ""))
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


_METRIC_LABELS = {
    "goodput": ("goodput (req/s)", 1.0),
    "effective_throughput": ("effective throughput (req/s)", 1.0),
    "request_throughput": ("request throughput (req/s)", 1.0),
    "output_throughput": ("output throughput (tok/s)", 1.0),
    "slo_attainment": ("SLO attainment (%)", 100.0),
}


def plot_goodput_vs_rate(
    rows: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "goodput"
) -> Path:
    """Line plot of ``metric`` against request rate (req/s), one line per policy.

    ``rows`` are dicts with at least ``policy``, ``rate`` and ``metric`` (e.g. a sweep's
    summaries plus those two keys). ``slo_attainment`` is plotted in %; ``*_ms`` keys in ms.
    """
    label, scale = _METRIC_LABELS.get(
        metric, (metric.replace("_ms", " (ms)").replace("_", " "), 1.0)
    )
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        v = r.get(metric)
        v = float(v) * scale if v is not None else math.nan
        by_policy.setdefault(str(r["policy"]), []).append((float(r["rate"]), v))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, pts in by_policy.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs request rate")
    if metric == "slo_attainment":
        ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _save(fig, path)
