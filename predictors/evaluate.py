"""Metrics, splits and the evaluation of Stage I predictors.

Metrics (per source and overall): output tokens MAE (tokens), MAPE (fraction), Kendall tau-b of
output length (predicted vs true; also of the rank score), tool-call count accuracy
(``round(pred) == true``) and MAE (calls), tool time MAE (s) and MAE of log s, remaining-output
MAE (tokens) and tau over all prefixes. Rows whose target is unknown are excluded from that
target (:func:`exclusions` counts them).

Splits: ``within`` (per source, a seeded group-aware 80/20 split by ``row.group``; one model
trained on all sources' train parts, tested per source) and ``across`` (for each source, train
on the other sources, test on all of its rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from predictors.features import tool_seconds
from predictors.models import TargetData, TargetModel
from predictors.schema import ToolUseRow

METHODS: tuple[str, ...] = ("lgbm", "hgb", "linear", "mean", "prompt_len", "oracle")


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error (units of the inputs); NaN when empty."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.mean(np.abs(pred - true))) if len(true) else float("nan")


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute percentage error as a fraction (0.25 = 25 %); true values must be > 0."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if not len(true):
        return float("nan")
    if np.any(true <= 0):
        raise ValueError("MAPE needs positive true values")
    return float(np.mean(np.abs(pred - true) / true))


def call_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of requests whose rounded predicted call count equals the true count."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if not len(true):
        return float("nan")
    return float(np.mean(np.rint(np.maximum(pred, 0.0)) == true))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b by counting pairs, O(n^2) memory-chunked; NaN if either is constant.

    tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)), n0 = n(n-1)/2 pairs, n1 / n2 = pairs tied in
    x / y.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 2:
        return float("nan")
    s = 0  # C - D
    tx = ty = 0  # pairs tied in x / in y
    step = max(1, 2_000_000 // n)
    for a in range(0, n, step):
        dx = np.sign(x[a:a + step, None] - x[None, :])
        dy = np.sign(y[a:a + step, None] - y[None, :])
        s += int(np.sum(dx * dy))
        tx += int(np.sum(dx == 0))
        ty += int(np.sum(dy == 0))
    # every ordered pair was counted twice; the diagonal counted as ties
    s //= 2
    n0 = n * (n - 1) // 2
    n1 = (tx - n) // 2
    n2 = (ty - n) // 2
    den = np.sqrt(float(n0 - n1) * float(n0 - n2))
    return float(s / den) if den > 0 else float("nan")


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b via scipy (O(n log n)); NaN if fewer than 2 values or either constant."""
    from scipy.stats import kendalltau

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(kendalltau(x, y, variant="b").statistic)


# --------------------------------------------------------------------------------------------
# splits and bookkeeping
# --------------------------------------------------------------------------------------------
def within_split(rows: Sequence[ToolUseRow], test_size: float = 0.2,
                 seed: int = 0) -> np.ndarray:
    """Boolean test mask over ``rows``: per source, a seeded GroupShuffleSplit by ``row.group``."""
    from sklearn.model_selection import GroupShuffleSplit

    test = np.zeros(len(rows), bool)
    srcs = np.array([r.source for r in rows])
    groups = np.array([r.group for r in rows])
    for s in sorted(set(srcs.tolist())):
        idx = np.flatnonzero(srcs == s)
        if len(set(groups[idx].tolist())) < 2:
            continue  # cannot split one group: all of it trains
        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        _, te = next(gss.split(idx, groups=groups[idx]))
        test[idx[te]] = True
    return test


def exclusions(rows: Sequence[ToolUseRow]) -> dict[str, dict[str, int]]:
    """Rows per source left out of each target because the dataset lacks it."""
    out: dict[str, dict[str, int]] = {"output": {}, "remaining": {}, "tool_s": {}}
    for r in rows:
        if r.output_tokens is None:
            out["output"][r.source] = out["output"].get(r.source, 0) + 1
        if r.segment_tokens[-1] is None:
            out["remaining"][r.source] = out["remaining"].get(r.source, 0) + 1
        if r.num_calls > 0 and tool_seconds(r) is None:
            out["tool_s"][r.source] = out["tool_s"].get(r.source, 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
def predict_targets(method: str, models: Mapping[str, TargetModel] | None,
                    test: Mapping[str, TargetData]) -> dict[str, np.ndarray]:
    """Natural-unit predictions of every target with test samples (oracle = the truth)."""
    out: dict[str, np.ndarray] = {}
    for t, d in test.items():
        if not len(d.y):
            continue
        if method == "oracle":
            out[t] = d.y.copy()
        elif models is not None and t in models:
            out[t] = models[t].predict(d.X)
    return out


def _metrics(preds: Mapping[str, np.ndarray], test: Mapping[str, TargetData],
             mask_of: Callable[[TargetData], np.ndarray]) -> dict[str, float]:
    m: dict[str, float] = {}
    if "output" in preds:
        d = test["output"]
        k = mask_of(d)
        p, y = preds["output"][k], d.y[k]
        m.update(n=int(k.sum()), out_mae=mae(p, y), out_mape=mape(p, y),
                 out_tau=kendall_tau(p, y))
        if "rank" in preds:
            m["rank_tau"] = kendall_tau(preds["rank"][mask_of(test["rank"])], y)
    if "calls" in preds:
        d = test["calls"]
        k = mask_of(d)
        m.update(calls_acc=call_accuracy(preds["calls"][k], d.y[k]),
                 calls_mae=mae(preds["calls"][k], d.y[k]))
    if "tool_s" in preds:
        d = test["tool_s"]
        k = mask_of(d)
        if k.any():
            p, y = preds["tool_s"][k], d.y[k]
            m.update(n_tool_calls=int(k.sum()), tool_mae_s=mae(p, y),
                     tool_mae_log=mae(np.log(np.maximum(p, 1e-5)), np.log(np.maximum(y, 1e-5))))
    if "remaining" in preds:
        d = test["remaining"]
        k = mask_of(d)
        m.update(rem_mae=mae(preds["remaining"][k], d.y[k]),
                 rem_tau=kendall_tau(preds["remaining"][k], d.y[k]))
    if "remaining_calls" in preds:
        d = test["remaining_calls"]
        k = mask_of(d)
        m.update(rem_calls_acc=call_accuracy(preds["remaining_calls"][k], d.y[k]))
    return m


def evaluate(method: str, models: Mapping[str, TargetModel] | None,
             test: Mapping[str, TargetData], source_names: Sequence[str],
             overall: bool = True) -> dict[str, dict[str, float]]:
    """Metrics per source present in ``test`` (and ``"all"`` if ``overall``)."""
    preds = predict_targets(method, models, test)
    res: dict[str, dict[str, float]] = {}
    present = sorted({int(s) for d in test.values() for s in d.src})
    for s in present:
        res[source_names[s]] = _metrics(preds, test, lambda d, s=s: d.src == s)
    if overall:
        res["all"] = _metrics(preds, test, lambda d: np.ones(len(d.y), bool))
    return res


def format_tables(results: Mapping[str, Any], metrics: Sequence[tuple[str, str]] = (
        ("out_tau", "Kendall tau (output length)"), ("rank_tau", "Kendall tau (rank score)"),
        ("out_mae", "output MAE (tokens)"), ("out_mape", "output MAPE"),
        ("calls_acc", "tool-call count accuracy"), ("calls_mae", "tool-call count MAE"),
        ("tool_mae_s", "tool time MAE (s)"), ("tool_mae_log", "tool time MAE (log s)"),
        ("rem_mae", "remaining output MAE (tokens, all prefixes)"),
        ("rem_tau", "Kendall tau (remaining output)"))) -> str:
    """Markdown: one table per (setting, metric), rows = methods, columns = sources."""
    lines: list[str] = []
    for setting, by_method in results.items():
        cols: list[str] = []
        for per_src in by_method.values():
            for s in per_src:
                if s not in cols:
                    cols.append(s)
        for key, title in metrics:
            if not any(key in v for per in by_method.values() for v in per.values()):
                continue
            lines += [f"### {setting}: {title}", "",
                      "| method | " + " | ".join(cols) + " |",
                      "|---|" + "---|" * len(cols)]
            for method, per_src in by_method.items():
                cells = []
                for c in cols:
                    v = per_src.get(c, {}).get(key)
                    cells.append("" if v is None or v != v else _fmt(key, v))
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _fmt(key: str, v: float) -> str:
    if key.endswith(("tau", "acc", "mape", "log")):
        return f"{v:.3f}"
    if key.endswith("_s"):
        return f"{v:.3g}"
    return f"{v:.1f}"
