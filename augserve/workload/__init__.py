"""Workloads: request-script sources, arrival processes and Hydra-friendly factories.

Factories take plain keyword arguments so that a config with ``_target_`` can build them, e.g.::

    workload:
      _target_: augserve.workload.make_augmix
      rate: 2.0          # requests/s
      duration_s: 1800   # s
      burstiness: 1.0    # gamma arrivals when != 1 (or arrivals: gamma)
"""

from __future__ import annotations

from pathlib import Path

from augserve.workload.agentic import AgenticSource
from augserve.workload.arrivals import AzureReplay, Gamma, Poisson
from augserve.workload.augmix import AugMixSource
from augserve.workload.base import ArrivalProcess, ScriptSource, Workload
from augserve.workload.errors import WorkloadError
from augserve.workload.holdout import load_holdout
from augserve.workload.infercept_json import InferceptSource, load_infercept_json
from augserve.workload.sampled import SampledWorkload
from augserve.workload.trace_jsonl import TraceWorkload, read_trace, write_trace

__all__ = [
    "AgenticSource", "ArrivalProcess", "AugMixSource", "AzureReplay", "Gamma",
    "InferceptSource", "Poisson", "SampledWorkload", "ScriptSource", "TraceWorkload", "Workload",
    "WorkloadError", "load_infercept_json", "make_agentic", "make_arrivals", "make_augmix",
    "make_infercept_json", "make_trace", "read_trace", "write_trace",
]


def make_arrivals(
    arrivals: str = "poisson",
    rate: float | None = 1.0,
    burstiness: float = 1.0,
    azure_path: str | Path | None = None,
    azure_start_s: float = 0.0,
) -> ArrivalProcess:
    """An arrival process by name.

    ``poisson``: Poisson at ``rate`` req/s, or gamma when ``burstiness != 1``; ``gamma``: gamma
    gaps with ``burstiness`` (vllm bench semantics); ``azure``: replay of ``azure_path``'s
    timestamps from ``azure_start_s`` (s into the trace), rescaled to ``rate`` (None = native).
    """
    if arrivals == "azure":
        if azure_path is None:
            raise ValueError("arrivals='azure' needs azure_path (an Azure LLM trace CSV)")
        return AzureReplay(azure_path, rate=rate, start_s=azure_start_s)
    if rate is None:
        raise ValueError(f"arrivals={arrivals!r} needs a rate (requests/s)")
    if arrivals == "gamma" or (arrivals == "poisson" and burstiness != 1.0):
        return Gamma(rate, burstiness)
    if arrivals == "poisson":
        return Poisson(rate)
    raise ValueError(f"unknown arrivals {arrivals!r}: expected 'poisson', 'gamma' or 'azure'")


def make_augmix(
    rate: float | None = 1.0,
    duration_s: float = 1800.0,
    burstiness: float = 1.0,
    arrivals: str = "poisson",
    azure_path: str | Path | None = None,
    max_model_len: int | None = None,
    stats_path: str | Path | None = None,
    max_requests: int | None = None,
    labels: str = "source",
) -> SampledWorkload:
    """The built-in InferCept-mixture generator at ``rate`` req/s for ``duration_s`` s."""
    return SampledWorkload(
        AugMixSource(stats_path, labels=labels),
        make_arrivals(arrivals, rate, burstiness, azure_path),
        duration_s, max_model_len=max_model_len, max_requests=max_requests,
    )


def make_agentic(
    rate: float | None = 0.02,
    duration_s: float = 1800.0,
    burstiness: float = 1.0,
    arrivals: str = "poisson",
    azure_path: str | Path | None = None,
    max_model_len: int | None = 131072,
    stats_path: str | Path | None = None,
    max_requests: int | None = None,
) -> SampledWorkload:
    """Coding-agent sessions (:mod:`augserve.workload.agentic`) at ``rate`` sessions/s for
    ``duration_s`` s, cut at ``max_model_len`` tokens (Llama-3.1-8B's 128k by default)."""
    return SampledWorkload(
        AgenticSource(stats_path), make_arrivals(arrivals, rate, burstiness, azure_path),
        duration_s, max_model_len=max_model_len, max_requests=max_requests,
    )


def make_infercept_json(
    path: str | Path,
    rate: float | None = 1.0,
    duration_s: float = 1800.0,
    burstiness: float = 1.0,
    arrivals: str = "poisson",
    azure_path: str | Path | None = None,
    max_model_len: int | None = None,
    max_requests: int | None = None,
    labels: str = "source",
    holdout: str | Path | None = None,
) -> SampledWorkload:
    """Scripts drawn with replacement from an InferCept/LAMPS JSON file, as InferCept does;
    with ``holdout`` (a predictor artifact directory) only those its split held out."""
    held = load_holdout(holdout) if holdout is not None else None
    return SampledWorkload(
        InferceptSource(path, labels=labels, holdout=held),
        make_arrivals(arrivals, rate, burstiness, azure_path),
        duration_s, max_model_len=max_model_len, max_requests=max_requests,
    )


def make_trace(path: str | Path, max_model_len: int | None = None) -> TraceWorkload:
    """Replay of a JSONL trace (arrivals and scripts as stored)."""
    return TraceWorkload(path, max_model_len=max_model_len)
