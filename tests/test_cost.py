"""Tests for the step-time cost model and the shipped profiles (augserve/engine/cost.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from augserve.engine.cost import (
    PROFILES_DIR,
    ConstantCostModel,
    CostModel,
    LinearCostModel,
    Profile,
    available_profiles,
    load_profile,
    prefill_attn_term,
)

SHIPPED = [
    "gptj_6b_a100", "llama2_7b_a100", "llama2_7b_h100", "llama31_8b_a100", "llama3_8b_a100",
]
REL = 1e-12


def _toy_profile(**overrides: object) -> Profile:
    kw: dict[str, object] = dict(
        name="toy",
        model="toy-model",
        gpu="toy-gpu",
        max_model_len=1024,
        kv_bytes_per_token=100,
        weights_bytes=100_000,
        gpu_mem_bytes=1_000_000,
        pcie_bytes_per_s=16_000.0,
        c0_s=0.001,
        t_floor_s=0.010,
        a_s=0.002,
        b_s_per_token=0.0001,
        d_s_per_ctx_token=1e-6,
        e_s_per_token_ctx=1e-9,
        gpu_mem_util=0.5,
        block_size=16,
        activation_reserve_bytes=50_000,
    )
    kw.update(overrides)
    return Profile(**kw)  # type: ignore[arg-type]


def test_available_profiles_lists_shipped() -> None:
    assert set(SHIPPED) <= set(available_profiles())
    assert available_profiles() == sorted(available_profiles())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_yaml_loads(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.sources, "every profile cites its sources"
    assert p.num_gpu_blocks() > 0
    assert p.block_size == 16
    # Loading by path gives the same profile.
    assert load_profile(PROFILES_DIR / f"{name}.yaml") == p
    assert load_profile(str(PROFILES_DIR / f"{name}.yaml")) == p


def test_all_yaml_in_profiles_dir_load() -> None:
    for path in PROFILES_DIR.glob("*.yaml"):
        load_profile(path)


# (profile, n_tokens, decode_ctx_sum, prefill_attn, expected seconds), computed by hand:
HAND_CASES = [
    # llama3_8b_a100, decode-only step of 8 requests at ctx 1000:
    #   a + b·N = 5.86 ms + 67.0 µs·8 = 6.396 ms < T_floor 9.98 ms  -> 9.98 ms
    #   d·Σctx = 0.08 µs · 8000 = 0.64 ms                           -> 10.62 ms
    ("llama3_8b_a100", 8, 8000, 0.0, 10.62e-3),
    # llama3_8b_a100, one 512-token prefill chunk at ctx 0:
    #   5.86 ms + 67.0 µs·512 = 40.164 ms; pairs = 512·(0 + 256) = 131072;
    #   e·pairs = 3.36e-9·131072 = 0.44040192 ms                    -> 40.60440192 ms
    ("llama3_8b_a100", 512, 0, 131072.0, 40.60440192e-3),
    # llama3_8b_a100, mixed: 4 decodes at ctx 1000 + a 256-token chunk after 512 cached tokens:
    #   N = 260: 5.86 + 0.067·260 = 23.28 ms; d: 0.08 µs·4000 = 0.32 ms;
    #   pairs = 256·(512 + 128) = 163840, e·pairs = 0.5505024 ms    -> 24.1505024 ms
    ("llama3_8b_a100", 260, 4000, 163840.0, 24.1505024e-3),
    # llama2_7b_a100, 8 decodes at ctx 1000: T_floor 9.18 ms (2.26 + 0.0641·8 = 2.7728 ms below)
    #   + 0.33 µs·8000 = 2.64 ms                                   -> 11.82 ms
    ("llama2_7b_a100", 8, 8000, 0.0, 11.82e-3),
    # llama2_7b_a100, 512-token chunk at ctx 0: 2.26 + 0.0641·512 = 35.0792 ms
    #   + 3.36e-9·131072 = 0.44040192 ms                            -> 35.51960192 ms
    ("llama2_7b_a100", 512, 0, 131072.0, 35.51960192e-3),
    # llama2_7b_h100, 8 decodes at ctx 1000: T_floor 5.60 ms + 0.201 µs·8000 = 1.608 ms
    #                                                               -> 7.208 ms
    ("llama2_7b_h100", 8, 8000, 0.0, 7.208e-3),
    # llama2_7b_h100, 512-token chunk at ctx 0: 3.15 + 0.0201·512 = 13.4412 ms
    #   + 1.51e-9·131072 = 0.19791872 ms                            -> 13.63911872 ms
    ("llama2_7b_h100", 512, 0, 131072.0, 13.63911872e-3),
    # gptj_6b_a100, 8 decodes at ctx 1000: T_floor = 10 + 0.0463·384 = 27.7792 ms
    #   + 0.287 µs·8000 = 2.296 ms                                  -> 30.0752 ms
    ("gptj_6b_a100", 8, 8000, 0.0, 30.0752e-3),
    # gptj_6b_a100, 512-token chunk at ctx 0: 10 + 0.0463·512 = 33.7056 ms
    #   + 2.94e-9·131072 = 0.38535168 ms                            -> 34.09095168 ms
    ("gptj_6b_a100", 512, 0, 131072.0, 34.09095168e-3),
]


@pytest.mark.parametrize(("name", "n", "ctx", "pa", "expected"), HAND_CASES)
def test_linear_formula_hand_computed(
    name: str, n: int, ctx: int, pa: float, expected: float
) -> None:
    cm = LinearCostModel(load_profile(name))
    assert cm.step_time(n, ctx, pa) == pytest.approx(expected, rel=REL)


def test_gptj_floor_is_saturation_point() -> None:
    # InferCept: saturation at 384 tokens, so a + b·384 == T_floor (continuity at the knee).
    p = load_profile("gptj_6b_a100")
    assert p.a_s + p.b_s_per_token * 384 == pytest.approx(p.t_floor_s, rel=REL)
    cm = LinearCostModel(p)
    assert cm.step_time(1, 0, 0.0) == pytest.approx(cm.step_time(384, 0, 0.0), rel=REL)
    assert cm.step_time(385, 0, 0.0) > cm.step_time(384, 0, 0.0)


def test_c0_is_added() -> None:
    # toy: c0 1 ms + max(10 ms, 2 ms + 0.1 ms·200 = 22 ms) + 1 µs·1000 + 1e-9·1e6 = 25 ms
    cm = LinearCostModel(_toy_profile())
    assert cm.step_time(200, 1000, 1e6) == pytest.approx(25e-3, rel=REL)
    # below the floor: 1 + 10 = 11 ms
    assert cm.step_time(10, 0, 0.0) == pytest.approx(11e-3, rel=REL)


def test_prefill_attn_term() -> None:
    assert prefill_attn_term(512, 0) == 131072.0
    assert prefill_attn_term(256, 512) == 163840.0
    assert prefill_attn_term(1, 999) == 999.5


@pytest.mark.parametrize("name", SHIPPED)
def test_vectorized_equals_scalar_exactly(name: str) -> None:
    cm = LinearCostModel(load_profile(name))
    rng = np.random.default_rng(0)
    size = 5000
    n = rng.integers(1, 16384, size=size)
    n[:50] = rng.integers(1, 64, size=50)  # make sure the floor branch is exercised
    ctx = rng.integers(0, 4_000_000, size=size)
    pa = rng.integers(0, 8192, size=size) * (rng.integers(0, 8192, size=size) + 0.5)
    pa[::3] = 0.0
    vec = cm.step_times(n, ctx, pa)
    assert vec.dtype == np.float64
    scalar = np.array(
        [cm.step_time(int(a), int(b), float(c)) for a, b, c in zip(n, ctx, pa, strict=True)]
    )
    assert np.array_equal(vec, scalar)  # bit-identical, not approx
    # Python floats in, same answer.
    assert cm.step_times(np.array([8]), np.array([8000]), np.array([0.0]))[0] == cm.step_time(
        8, 8000, 0.0
    )


def test_vectorized_equals_scalar_exactly_with_c0() -> None:
    cm = LinearCostModel(_toy_profile())
    rng = np.random.default_rng(1)
    n = rng.integers(1, 500, size=1000)
    ctx = rng.integers(0, 100_000, size=1000)
    pa = rng.random(1000) * 1e7
    scalar = [cm.step_time(int(a), int(b), float(c)) for a, b, c in zip(n, ctx, pa, strict=True)]
    assert np.array_equal(cm.step_times(n, ctx, pa), np.array(scalar))


def test_constant_cost_model() -> None:
    cm = ConstantCostModel(0.02)
    assert isinstance(cm, CostModel)
    assert cm.step_time(1, 0, 0.0) == 0.02
    assert cm.step_time(4096, 10**6, 1e9) == 0.02
    out = cm.step_times(np.arange(5), np.zeros(5), np.zeros(5))
    assert out.dtype == np.float64 and np.array_equal(out, np.full(5, 0.02))
    with pytest.raises(ValueError):
        ConstantCostModel(0.0)
    with pytest.raises(ValueError):
        ConstantCostModel(float("nan"))


def test_cost_model_is_abstract() -> None:
    with pytest.raises(TypeError):
        CostModel()  # type: ignore[abstract]


def test_num_gpu_blocks_hand_computed() -> None:
    # (1_000_000 B · 0.5 − 100_000 B weights − 50_000 B reserve) / (100 B · 16) = 218.75 -> 218
    p = _toy_profile()
    assert p.block_bytes == 1600
    assert p.num_gpu_blocks() == 218
    # Without the reserve: 400_000 / 1600 = 250 exactly.
    assert dataclasses.replace(p, activation_reserve_bytes=0).num_gpu_blocks() == 250
    # Nothing fits -> 0.
    assert dataclasses.replace(p, weights_bytes=600_000).num_gpu_blocks() == 0
    # Swap: 16_000 B/s / 1600 B per block = 10 blocks/s.
    assert p.swap_blocks_per_s() == pytest.approx(10.0, rel=REL)


def test_shipped_num_gpu_blocks() -> None:
    # 0.9 · 85,061,827,297 B (79.22 GiB) − reserve 3,274,912,563 B (3.05 GiB) = 73,280,731,804
    # llama3_8b_a100: (73,280,731,804 − 16,060,522,496) / (131072·16) = 27284.6 -> 27284
    assert load_profile("llama3_8b_a100").num_gpu_blocks() == 27284
    # llama2_7b_*:    (73,280,731,804 − 13,476,831,232) / (524288·16) = 7129.3  -> 7129
    assert load_profile("llama2_7b_a100").num_gpu_blocks() == 7129
    assert load_profile("llama2_7b_h100").num_gpu_blocks() == 7129
    # gptj_6b_a100:   (73,280,731,804 − 12,106,762,688) / (458752·16) = 8334.4  -> 8334
    assert load_profile("gptj_6b_a100").num_gpu_blocks() == 8334


def test_gptj_swap_rate_derivation() -> None:
    # InferCept: (1 + 2·0.00462)·384 + 2·108.99 = 605.52816 tokens swapped per 27.7792 ms step
    p = load_profile("gptj_6b_a100")
    tokens = (1 + 2 * 0.00462) * 384 + 2 * 108.99
    derived = tokens * p.kv_bytes_per_token / p.t_floor_s
    assert derived == pytest.approx(p.pcie_bytes_per_s, rel=1e-4)
    assert p.swap_blocks_per_s() == pytest.approx(1e10 / (458752 * 16), rel=REL)


def test_unknown_profile_lists_available() -> None:
    with pytest.raises(ValueError) as exc:
        load_profile("no_such_profile")
    msg = str(exc.value)
    assert "no_such_profile" in msg
    for name in SHIPPED:
        assert name in msg


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_profile(tmp_path / "absent.yaml")


def _write_variant(tmp_path: Path, edit: str, drop: str | None = None) -> Path:
    src = (PROFILES_DIR / "llama3_8b_a100.yaml").read_text().splitlines()
    lines = [ln for ln in src if drop is None or not ln.startswith(f"{drop}:")]
    lines.append(edit)
    path = tmp_path / "bad_profile.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("edit", "drop", "field"),
    [
        ("", "b_s_per_token", "b_s_per_token"),  # missing
        ("warp_speed: 9", None, "warp_speed"),  # unknown
        ("d_s_per_ctx_token: -1.0e-7", "d_s_per_ctx_token", "d_s_per_ctx_token"),  # negative
        ("kv_bytes_per_token: 0", "kv_bytes_per_token", "kv_bytes_per_token"),  # not positive
        ("max_model_len: 8192.5", "max_model_len", "max_model_len"),  # not an integer
        ("a_s: fast", "a_s", "a_s"),  # not a number
        ("gpu_mem_util: 1.5", "gpu_mem_util", "gpu_mem_util"),  # > 1
        ("model: 7", "model", "model"),  # not a string
    ],
)
def test_bad_yaml_names_file_and_field(
    tmp_path: Path, edit: str, drop: str | None, field: str
) -> None:
    path = _write_variant(tmp_path, edit, drop)
    with pytest.raises(ValueError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert field in msg


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_profile(path)


def test_numeric_strings_accepted(tmp_path: Path) -> None:
    # PyYAML reads 16.06e9 (no exponent sign) as a string; the loader accepts it.
    path = _write_variant(tmp_path, "weights_bytes: 16.06e9", "weights_bytes")
    assert load_profile(path).weights_bytes == 16_060_000_000


def test_profile_is_frozen_and_validates() -> None:
    p = _toy_profile()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.a_s = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="c0_s"):
        _toy_profile(c0_s=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        _toy_profile(block_size=0)
