"""Step-time cost model and model/GPU profiles.

One engine step (a forward pass over every token scheduled in it) costs, in seconds::

    t = c0 + max(T_floor, a + b·N_tokens) + d·Σ ctx_decoding + e·Σ chunk·(ctx + chunk/2)

- ``c0``: per-step CPU/scheduling overhead;
- ``max(T_floor, a + b·N)``: the token-linear layers (QKV/O projections, MLP, norms). Below
  saturation a step is memory-bound (reading the weights) and costs ``T_floor`` whatever N is;
  above it the cost grows linearly in the number of scheduled tokens N (prefill + decode);
- ``d·Σ ctx``: decode attention, memory-bound: reading each decoding request's KV cache;
- ``e·Σ chunk·(ctx + chunk/2)``: prefill attention, compute-bound: the number of (query, key)
  pairs of a causal chunk of ``chunk`` tokens appended to ``ctx`` cached tokens.

Profiles live in ``data/profiles/<name>.yaml``; each cites where its figures come from.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PROFILES_DIR = Path(__file__).resolve().parents[2] / "data" / "profiles"

_INT_FIELDS = frozenset(
    {
        "max_model_len",
        "kv_bytes_per_token",
        "weights_bytes",
        "gpu_mem_bytes",
        "block_size",
        "activation_reserve_bytes",
    }
)
_STR_FIELDS = frozenset({"name", "model", "gpu"})
# Fields that must be strictly positive (the rest of the numbers must be >= 0).
_POSITIVE_FIELDS = frozenset(
    {
        "max_model_len",
        "kv_bytes_per_token",
        "gpu_mem_bytes",
        "gpu_mem_util",
        "block_size",
        "pcie_bytes_per_s",
    }
)


@dataclass(frozen=True)
class Profile:
    """A model on a GPU: memory figures (bytes), bandwidth (bytes/s) and step-cost coefficients.

    ``activation_reserve_bytes`` is GPU memory that is neither weights nor KV cache: the
    activation peak of vLLM's profiling forward pass plus non-torch allocations (CUDA context,
    NCCL, CUDA-graph pool). vLLM subtracts it before sizing the KV cache. The default is 0 so
    that the bare formula is easy to check by hand; shipped profiles set a measured value.
    """

    name: str
    model: str
    gpu: str
    max_model_len: int  # tokens
    kv_bytes_per_token: int  # bytes of K+V for one token over all layers
    weights_bytes: int  # bytes
    gpu_mem_bytes: int  # bytes, total device memory as CUDA reports it
    pcie_bytes_per_s: float  # effective host<->GPU swap throughput, bytes/s
    c0_s: float  # per-step CPU/scheduling overhead, s
    t_floor_s: float  # memory-bound floor of the token-linear part, s
    a_s: float  # intercept of the token-linear part, s
    b_s_per_token: float  # slope of the token-linear part, s per scheduled token
    d_s_per_ctx_token: float  # decode attention, s per context token of each decoding request
    e_s_per_token_ctx: float  # prefill attention, s per (chunk token × context token) pair
    gpu_mem_util: float = 0.9  # fraction of gpu_mem_bytes vLLM may use (vLLM's default)
    block_size: int = 16  # tokens per KV block
    activation_reserve_bytes: int = 0  # bytes, see class docstring
    sources: tuple[str, ...] = ()  # citations for the figures

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sources":
                if not isinstance(value, tuple) or not all(isinstance(s, str) for s in value):
                    raise ValueError("field 'sources' must be a tuple of strings")
                continue
            if f.name in _STR_FIELDS:
                if not isinstance(value, str) or not value:
                    raise ValueError(f"field {f.name!r} must be a non-empty string")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"field {f.name!r} must be a number, got {value!r}")
            if f.name in _INT_FIELDS and not isinstance(value, int):
                raise ValueError(f"field {f.name!r} must be an integer, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"field {f.name!r} must be finite, got {value!r}")
            if f.name in _POSITIVE_FIELDS and value <= 0:
                raise ValueError(f"field {f.name!r} must be > 0, got {value!r}")
            if value < 0:
                raise ValueError(f"field {f.name!r} must be >= 0, got {value!r}")
        if self.gpu_mem_util > 1:
            raise ValueError(f"field 'gpu_mem_util' must be <= 1, got {self.gpu_mem_util!r}")

    @property
    def block_bytes(self) -> int:
        """Bytes of one KV block (``kv_bytes_per_token × block_size``)."""
        return self.kv_bytes_per_token * self.block_size

    def num_gpu_blocks(self) -> int:
        """KV blocks that fit on the GPU, as vLLM sizes its cache (0 if nothing fits).

        ``floor((gpu_mem_bytes·gpu_mem_util − weights_bytes − activation_reserve_bytes)
        / (kv_bytes_per_token·block_size))``.
        """
        free = self.gpu_mem_bytes * self.gpu_mem_util - self.weights_bytes
        free -= self.activation_reserve_bytes
        return max(0, math.floor(free / self.block_bytes))

    def swap_blocks_per_s(self) -> float:
        """KV blocks per second that can move between host and GPU (``pcie_bytes_per_s``)."""
        return self.pcie_bytes_per_s / self.block_bytes


def prefill_attn_term(chunk: int, ctx_before: int) -> float:
    """One prefill chunk's (query, key) pair count: ``chunk·(ctx_before + chunk/2)``."""
    return chunk * (ctx_before + chunk / 2)


class CostModel(ABC):
    """Maps what a step schedules to its duration in seconds."""

    @abstractmethod
    def step_time(self, n_tokens: int, decode_ctx_sum: int, prefill_attn: float) -> float:
        """Seconds for one step.

        ``n_tokens``: all tokens scheduled in the step (prefill + decode); ``decode_ctx_sum``:
        Σ context length (tokens) over decoding requests; ``prefill_attn``: Σ over prefill
        chunks of ``chunk·(ctx_before_chunk + chunk/2)`` (see :func:`prefill_attn_term`).
        """

    @abstractmethod
    def step_times(
        self, n_tokens: np.ndarray, decode_ctx_sum: np.ndarray, prefill_attn: np.ndarray
    ) -> np.ndarray:
        """Vectorized :meth:`step_time` (float64 seconds), bit-identical element by element."""


class LinearCostModel(CostModel):
    """``t = c0 + max(T_floor, a + b·N) + d·Σctx_decoding + e·Σchunk·(ctx + chunk/2)``."""

    __slots__ = ("profile", "_c0", "_floor", "_a", "_b", "_d", "_e")

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._c0 = float(profile.c0_s)
        self._floor = float(profile.t_floor_s)
        self._a = float(profile.a_s)
        self._b = float(profile.b_s_per_token)
        self._d = float(profile.d_s_per_ctx_token)
        self._e = float(profile.e_s_per_token_ctx)

    def step_time(self, n_tokens: int, decode_ctx_sum: int, prefill_attn: float) -> float:
        lin = self._a + self._b * n_tokens
        if lin < self._floor:
            lin = self._floor
        return self._c0 + lin + self._d * decode_ctx_sum + self._e * prefill_attn

    def step_times(
        self, n_tokens: np.ndarray, decode_ctx_sum: np.ndarray, prefill_attn: np.ndarray
    ) -> np.ndarray:
        n = np.asarray(n_tokens, dtype=np.float64)
        ctx = np.asarray(decode_ctx_sum, dtype=np.float64)
        pa = np.asarray(prefill_attn, dtype=np.float64)
        lin = np.maximum(self._a + self._b * n, self._floor)
        return self._c0 + lin + self._d * ctx + self._e * pa

    def __repr__(self) -> str:
        return f"LinearCostModel({self.profile.name!r})"


class ConstantCostModel(CostModel):
    """Every step costs ``step_s`` seconds, whatever it schedules (for hand-computed tests)."""

    __slots__ = ("step_s",)

    def __init__(self, step_s: float) -> None:
        if not step_s > 0 or not math.isfinite(step_s):
            raise ValueError(f"step_s must be a positive finite number, got {step_s!r}")
        self.step_s = float(step_s)

    def step_time(self, n_tokens: int, decode_ctx_sum: int, prefill_attn: float) -> float:
        return self.step_s

    def step_times(
        self, n_tokens: np.ndarray, decode_ctx_sum: np.ndarray, prefill_attn: np.ndarray
    ) -> np.ndarray:
        return np.full(np.shape(n_tokens), self.step_s, dtype=np.float64)

    def __repr__(self) -> str:
        return f"ConstantCostModel({self.step_s!r})"


def available_profiles() -> list[str]:
    """Names of the shipped profiles (``data/profiles/*.yaml`` stems), sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _coerce(path: Path, name: str, value: Any) -> Any:
    """Convert one yaml value to the field's type; ValueError naming file and field."""
    if name == "sources":
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError(f"{path}: field 'sources' must be a list of strings")
        return tuple(value)
    if name in _STR_FIELDS:
        if not isinstance(value, str):
            raise ValueError(f"{path}: field {name!r} must be a string, got {value!r}")
        return value
    # PyYAML reads e.g. ``16.06e9`` (no exponent sign) as a string: accept numeric strings.
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"{path}: field {name!r} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: field {name!r} must be a number, got {value!r}")
    if name in _INT_FIELDS:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{path}: field {name!r} must be an integer, got {value!r}")
            value = int(value)
        return value
    return float(value)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by name (``data/profiles/<name>.yaml``) or by path to a yaml file.

    Raises ValueError for an unknown name (listing the available ones) and for a file with a
    missing, unknown or invalid field (naming the file and the field).
    """
    s = str(name_or_path)
    path = Path(s)
    is_path = path.suffix in (".yaml", ".yml") or "/" in s or "\\" in s
    if not is_path:
        path = PROFILES_DIR / f"{s}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown profile {s!r}; available: {', '.join(available_profiles()) or 'none'}"
            )
    elif not path.is_file():
        raise ValueError(f"profile file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid yaml: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of profile fields")
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise ValueError(f"{path}: unknown field {unknown[0]!r} (known: {', '.join(fields)})")
    missing = [
        n
        for n, f in fields.items()
        if n not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{path}: missing field {missing[0]!r}")
    kwargs = {k: _coerce(path, k, v) for k, v in raw.items()}
    try:
        return Profile(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def saturation_tokens(profile: Profile, max_tokens: int = 8192, rel_tol: float = 1e-6) -> int:
    """InferCept's per-step token budget for ``profile``: the saturation point of its step-time
    curve, the most tokens a step schedules at the cost of one (tokens).

    InferCept (Abhyankar et al., ICML 2024; ``WukLab/InferCept``
    ``vllm/core/scheduler_v2.py::_set_max_ragged_batch``, ``mlimit = 384`` for GPT-J-6B on an
    A100, with the forward-time fit ``T_fwd = a·x + c`` of its ``exps/*.sh``) caps a step where
    the forward pass stops being memory-bound: below it, more tokens ride for free; above it,
    step time (and every running request's TPOT) grows with each token. On the profile's
    curve (``step_time(N)`` with no attention terms) that is the largest ``N`` whose step time
    is the floor's, found by sweeping ``N = 1..max_tokens`` (``rel_tol``: float slack). The
    GPT-J profile reproduces 384; Llama-3-8B on an A100 gives 61. (AgentServeSim's profiles
    use another rule, the smallest N reaching 98% of peak throughput ``N/T(N)``, which on these
    linear curves lands in the thousands; it is not how InferCept's 384 arises.) A curve with
    no memory-bound floor (the CPU profiles: every token costs) has no saturation point; its
    budget is then vLLM's default, 2048.
    """
    if profile.t_floor_s <= profile.a_s + profile.b_s_per_token:
        return 2048
    cost = LinearCostModel(profile)
    n = np.arange(1, max_tokens + 1)
    t = cost.step_times(n, np.zeros(len(n)), np.zeros(len(n)))
    flat = np.nonzero(t <= t[0] * (1.0 + rel_tol))[0]
    return int(n[flat[-1]])
