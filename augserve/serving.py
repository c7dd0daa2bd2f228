"""The library function behind ``serve.py``: one workload, one engine, one or more policies.

Every policy sees the same request stream (same seed, same arrivals). Per policy it writes
``<policy>/summary.json`` and ``<policy>/requests.csv``; for the run, ``comparison.md``
(with a legend of the rows' labels), ``summary.csv``, ``ttft_cdf.png`` and ``goodput.png`` in
``out_dir``.

A policy config may carry two keys that are not the policy's arguments
(:func:`split_policy_config`): ``label`` (what its row is, for tables) and ``engine`` (engine
settings for that row alone, e.g. ``prefix_caching: false`` for "vLLM without prefix caching"):
the engine is built again with them, so neither engine nor policy asks about the other.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from augserve.engine.base import Engine, RunResult
from augserve.loggers import NULL_LOGGER, Logger
from augserve.metrics import summarize, write_requests_csv, write_summary_json
from augserve.report import comparison_table, plot_goodput, plot_ttft_cdf
from augserve.request import AugRequest
from augserve.sched.base import Policy
from augserve.slo import parse_slo
from augserve.workload.base import Workload

log = logging.getLogger(__name__)

#: columns of summary.csv, one row per policy
SUMMARY_COLUMNS = (
    "policy", "seed", "num_requests", "completed", "duration", "goodput", "slo_attainment",
    "request_throughput", "output_throughput", "median_ttft_ms", "p99_ttft_ms",
    "median_tpot_ms", "median_norm_latency_ms", "median_resume_ms", "p99_resume_ms",
    "preemptions", "recomputed_tokens", "engine_recompute_s", "engine_forward_s", "wall_s",
)


#: keys of a policy config that are not the policy's arguments
POLICY_META_KEYS = ("label", "engine")


def split_policy_config(pcfg: Mapping[str, Any]) -> tuple[dict[str, Any], str | None,
                                                          dict[str, Any]]:
    """(the policy's own config, its row label, its engine overrides)."""
    own = dict(pcfg)
    label = own.pop("label", None)
    engine = own.pop("engine", None) or {}
    if not isinstance(engine, Mapping):
        raise ValueError(f"policy key 'engine' must be a mapping of engine settings, got "
                         f"{engine!r}")
    return own, None if label is None else str(label), dict(engine)


def prepare_requests(workload: Workload, engine: Engine, seed: int) -> list[AugRequest]:
    """The seeded request stream, with scripts fitted to the engine's context length."""
    reqs = workload.requests(seed)
    max_len = getattr(engine, "max_model_len", None)
    if max_len is not None:
        reqs = [r.fit_context(max_len) for r in reqs]
    return reqs


def run_policies(
    workload: Workload,
    engine: Engine,
    policies: Mapping[str, Policy],
    slo: str | Mapping[str, float] | None,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
    plots: bool = True,
    logger: Logger = NULL_LOGGER,
    engines: Mapping[str, Engine] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, dict]:
    """Run every policy on the same seeded stream; write results; return summaries by policy.

    ``engines``: the engine of a policy that runs on its own (same profile, other settings);
    ``labels``: what a policy's row is (in ``summary.json`` and ``comparison.md``'s legend).
    """
    engines = engines or {}
    labels = labels or {}
    if not policies:
        raise ValueError("no policy to run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slo_ms = parse_slo(slo)
    requests = prepare_requests(workload, engine, seed)
    # Throughputs are per second of the arrival window: tool calls lasting minutes would
    # otherwise let the drain dominate vLLM's benchmark duration. At steady state the two agree.
    window = getattr(workload, "duration_s", None)
    log.info("%d requests, seed %d, SLO %s", len(requests), seed, slo_ms)
    summaries: dict[str, dict] = {}
    results: dict[str, RunResult] = {}
    for name, policy in policies.items():
        t0 = time.perf_counter()
        result = engines.get(name, engine).run(requests, policy, progress=progress)
        wall = time.perf_counter() - t0
        s = summarize(result, slo_ms, duration_s=window)
        s["policy"] = name
        s["seed"] = seed
        s["wall_s"] = wall
        if name in labels:
            s["label"] = labels[name]
        pdir = out / name
        write_summary_json(pdir / "summary.json", s)
        write_requests_csv(pdir / "requests.csv", result.records, slo_ms)
        summaries[name] = s
        results[name] = result
        log.info("%s: goodput %.3f req/s, SLO attainment %.1f%% (%.1f s wall)",
                 name, s["goodput"], 100 * s["slo_attainment"], wall)
        logger.log_summary(name, s)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for s in summaries.values():
            w.writerow({k: s.get(k) for k in SUMMARY_COLUMNS})
    legend = "".join(f"\n- `{n}`: {labels[n]}" for n in summaries if n in labels)
    (out / "comparison.md").write_text(comparison_table(summaries, markdown=True) + "\n"
                                       + (legend[1:] + "\n" if legend else ""))
    if plots:
        plot_ttft_cdf({n: r.records for n, r in results.items()}, out / "ttft_cdf.png")
        plot_goodput(summaries, out / "goodput.png")
        logger.log_images({"ttft_cdf": out / "ttft_cdf.png", "goodput": out / "goodput.png"})
    return summaries
