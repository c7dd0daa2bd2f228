"""Hydra-friendly constructors for engines (plain keyword arguments, units in the names)."""

from __future__ import annotations

import math

from augserve.engine.cost import ConstantCostModel, load_profile
from augserve.engine.sim import SimConfig, SimEngine


def make_sim_engine(
    profile: str = "llama3_8b_a100",
    max_num_batched_tokens: int = 8192,
    max_num_seqs: int = 256,
    prefix_caching: bool = True,
    swap_space_gib: float = 64.0,
    max_time_s: float | None = None,
    skip_stretches: bool = True,
    constant_step_s: float | None = None,
    num_gpu_blocks: int | None = None,
    audit: bool = False,
    decision_trace: str | None = None,
) -> SimEngine:
    """A :class:`SimEngine` on a named profile (``data/profiles/<profile>.yaml``) or a path.

    ``constant_step_s`` replaces the profile's cost model by a constant step time (tests);
    ``num_gpu_blocks`` overrides the KV capacity derived from GPU memory; ``decision_trace``
    is a JSONL file for the per-step decisions of each run (``{policy}`` in it becomes the
    policy's name; :mod:`augserve.engine.trace`).
    """
    if max_num_batched_tokens < 1 or max_num_seqs < 1:
        raise ValueError("max_num_batched_tokens and max_num_seqs must be >= 1")
    if swap_space_gib < 0:
        raise ValueError(f"swap_space_gib={swap_space_gib} must be >= 0")
    prof = load_profile(profile)
    cfg = SimConfig(
        max_num_batched_tokens=int(max_num_batched_tokens),
        max_num_seqs=int(max_num_seqs),
        prefix_caching=bool(prefix_caching),
        swap_space_bytes=float(swap_space_gib) * 2**30,
        max_time_s=math.inf if max_time_s is None else float(max_time_s),
        skip_stretches=bool(skip_stretches),
        audit=bool(audit),
        decision_trace=None if decision_trace is None else str(decision_trace),
    )
    cost = ConstantCostModel(constant_step_s) if constant_step_s is not None else None
    return SimEngine(prof, cost=cost, config=cfg, num_gpu_blocks=num_gpu_blocks)
