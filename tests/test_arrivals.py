"""Arrival processes: rates, burstiness, Azure replay, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from augserve.workload import AzureReplay, Gamma, Poisson, WorkloadError, make_arrivals

DATA = Path(__file__).parents[1].parent / "shared" / "data"
AZURE = DATA / "azure_llm_trace_2023"
needs_data = pytest.mark.skipif(not AZURE.is_dir(), reason=f"real data absent: {AZURE}")


def _cv(t: np.ndarray) -> float:
    gaps = np.diff(t)
    return float(gaps.std() / gaps.mean())


def test_poisson_rate_and_cv() -> None:
    t = Poisson(4.0).times(np.random.default_rng(0), 5000.0)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 5000.0
    assert len(t) / 5000.0 == pytest.approx(4.0, rel=0.03)  # 20k arrivals: sd 0.7%
    assert _cv(t) == pytest.approx(1.0, abs=0.03)


def test_gamma_burstiness() -> None:
    rng = np.random.default_rng(1)
    bursty = Gamma(4.0, burstiness=0.25).times(rng, 5000.0)
    assert len(bursty) / 5000.0 == pytest.approx(4.0, rel=0.06)
    assert _cv(bursty) == pytest.approx(2.0, rel=0.06)
    smooth = Gamma(4.0, burstiness=4.0).times(rng, 5000.0)
    assert _cv(smooth) == pytest.approx(0.5, rel=0.05)
    assert _cv(Gamma(4.0, 1.0).times(rng, 5000.0)) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("proc", [Poisson(2.0), Gamma(2.0, 0.5)])
def test_deterministic_per_seed(proc) -> None:
    a = proc.times(np.random.default_rng(7), 600.0)
    b = proc.times(np.random.default_rng(7), 600.0)
    c = proc.times(np.random.default_rng(8), 600.0)
    assert np.array_equal(a, b) and not np.array_equal(a[:10], c[:10])


def test_factory() -> None:
    assert isinstance(make_arrivals("poisson", 1.0), Poisson)
    assert isinstance(make_arrivals("poisson", 1.0, burstiness=0.5), Gamma)
    assert isinstance(make_arrivals("gamma", 1.0, burstiness=0.5), Gamma)
    with pytest.raises(ValueError):
        make_arrivals("uniform", 1.0)
    with pytest.raises(ValueError):
        Poisson(0.0)


@needs_data
def test_azure_replay_real_csv() -> None:
    path = AZURE / "AzureLLMInferenceTrace_code.csv"
    native = AzureReplay(path)
    assert len(native.offsets) == 8819
    assert 3400 < native.offsets[-1] < 3600  # about one hour
    t = native.times(np.random.default_rng(0), 600.0)
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0) and t.max() < 600.0
    assert np.array_equal(t, native.times(np.random.default_rng(99), 600.0))  # rng unused
    # first row 2023-11-16 18:17:03.97996, second 18:17:04.03196
    assert t[1] == pytest.approx(0.052, abs=1e-6)
    full = native.times(np.random.default_rng(0), 1e9)
    assert len(full) == 8819
    scaled = AzureReplay(path, rate=1.0)
    ts = scaled.times(np.random.default_rng(0), 1e9)
    assert (len(ts) - 1) / ts[-1] == pytest.approx(1.0, rel=1e-9)
    late = AzureReplay(path, start_s=1800.0).times(np.random.default_rng(0), 1e9)
    assert late[0] == 0.0 and len(late) == int(np.sum(native.offsets >= 1800.0))
    conv = AzureReplay(AZURE / "AzureLLMInferenceTrace_conv.csv")
    assert len(conv.offsets) == 19366 and conv.native_rate > native.native_rate


@pytest.mark.parametrize(
    ("row", "field"),
    [("2023-11-16 18:17:0x.1,10,2", "TIMESTAMP"), ("2023-11-16 18:17:05.1,ten,2", "ContextTokens"),
     ("2023-11-16 18:17:05.1,10,-2", "GeneratedTokens"), ("2023-11-16 18:17:05.1,10", None)],
)
def test_azure_bad_rows(tmp_path: Path, row: str, field: str | None) -> None:
    p = tmp_path / "trace.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:17:03.9799600,4808,10\n" + row + "\n"
                 "2023-11-16 18:17:09.0000000,1,1\n")
    with pytest.raises(WorkloadError) as ei:
        AzureReplay(p)
    assert (ei.value.file, ei.value.line) == (str(p), 3)
    if field is not None:
        assert ei.value.field == field
    p.write_text("time,x\n1,2\n")
    with pytest.raises(WorkloadError) as ei:
        AzureReplay(p)
    assert (ei.value.line, ei.value.field) == (1, "TIMESTAMP")
