"""experiments/paper.py: the sweep script gives identical tables for the same seed."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paper", ROOT / "experiments" / "paper.py")
assert _spec is not None and _spec.loader is not None
paper = importlib.util.module_from_spec(_spec)
sys.modules["paper"] = paper  # dataclasses look their module up there
_spec.loader.exec_module(paper)

# wall time and the job directory are the only fields allowed to differ between runs
VOLATILE = {"wall_s", "job"}
TINY = paper.Study("tiny", ["workload=augmix", "workload.duration_s=20"], [6.0, 12.0])
OVERRIDES = ("policy=[vllm,augserve]", "hydra.launcher.n_jobs=2", "plots=false")


def _run(root: Path, seed: int) -> tuple[list[dict], dict[tuple[float, str], list[str]]]:
    """Summary rows (volatile fields dropped), and each (rate, policy)'s arrival times (the
    ``arrival_s`` column of its requests.csv)."""
    rows = paper.run_study(TINY, seed, str(ROOT.parent / "shared" / "data"), quick=False,
                           root=root, extra_overrides=OVERRIDES)
    arrivals = {}
    for r in rows:
        with open(Path(r["job"]) / r["policy"] / "requests.csv") as f:
            arrivals[(r["rate"], r["policy"])] = [x["arrival_s"] for x in csv.DictReader(f)]
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
                  key=lambda r: (r["rate"], r["policy"])), arrivals


def test_sweep_is_deterministic_per_seed(tmp_path: Path) -> None:
    (a, arr_a), (b, arr_b) = _run(tmp_path / "a", 3), _run(tmp_path / "b", 3)
    assert [(r["rate"], r["policy"]) for r in a] == [
        (6.0, "augserve"), (6.0, "vllm"), (12.0, "augserve"), (12.0, "vllm")]
    assert a == b and arr_a == arr_b
    # the same arrivals for every policy of a job, and another seed gives other arrivals
    for rate in (6.0, 12.0):
        assert arr_a[(rate, "vllm")] == arr_a[(rate, "augserve")] != []
    _, arr_c = _run(tmp_path / "c", 4)
    for key, times in arr_a.items():
        assert arr_c[key] != times, key


def test_capacity_and_stress_point() -> None:
    rows = [{"policy": p, "rate": r, "slo_attainment": a} for p, r, a in [
        ("vllm", 1.0, 1.0), ("vllm", 2.0, 0.45), ("vllm", 3.0, 0.2), ("vllm", 4.0, 0.05),
        ("augserve", 1.0, 1.0), ("augserve", 2.0, 0.95), ("augserve", 3.0, 0.89)]]
    assert paper.capacity(rows, "vllm") == 1.0
    assert paper.capacity(rows, "augserve") == 2.0
    assert paper.capacity(rows, "oracle") == 0.0
    assert paper.stress_rate(rows) == 3.0  # highest rate with vllm in [10%, 50%)
    assert paper.stress_rate(rows[:1]) is None


def _job(root: Path, name: str, rate: float, duration_s: float, policies: list[str]) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        f"seed: 0\nworkload:\n  rate: {rate}\n  duration_s: {duration_s}\n")
    (job / "summary.csv").write_text(
        "policy,goodput,slo_attainment\n" + "".join(f"{p},1.0,1.0\n" for p in policies))


def test_collect_rows_keeps_one_window_and_refuses_stale_jobs(tmp_path: Path) -> None:
    _job(tmp_path, "0", 6.0, 600.0, ["vllm", "augserve"])
    _job(tmp_path, "1", 6.0, 120.0, ["vllm"])  # a quick run's job: another window
    _job(tmp_path, "2", 99.0, 600.0, ["vllm"])  # a rate no longer in the grid
    rows = paper.collect_rows(TINY, 0, [6.0, 12.0], tmp_path, duration_s=600.0)
    assert sorted((r["rate"], r["policy"]) for r in rows) == [(6.0, "augserve"), (6.0, "vllm")]
    _job(tmp_path, "3", 6.0, 600.0, ["vllm"])  # the same point twice: which one is meant?
    with pytest.raises(ValueError, match="remove the stale job"):
        paper.collect_rows(TINY, 0, [6.0], tmp_path, duration_s=600.0)
    with pytest.raises(ValueError, match="no finished job"):
        paper.collect_rows(TINY, 1, [6.0], tmp_path)


def test_quick_runs_never_write_the_committed_results(tmp_path: Path) -> None:
    """A --quick run once overwrote experiments/results/paper_<study>_*.png."""
    results = ROOT / "experiments" / "results"
    assert paper.output_dir(quick=False) == results
    assert results not in paper.output_dir(quick=True).parents
    rows = [{"study": "tiny", "rate": r, "policy": p, "goodput": 1.0, "slo_attainment": 0.5,
             "median_ttft_ms": 1.0, "p99_ttft_ms": 1.0, "median_norm_latency_ms": 1.0,
             "preemptions": 0, "job": str(tmp_path)} for r in (6.0, 12.0) for p in paper.POLICIES]
    before = {p: p.stat().st_mtime_ns for p in results.glob("*.png")}
    paper.report(rows, tmp_path, [TINY], tag="paper_quick")
    made = sorted(p.name for p in tmp_path.glob("*.png"))
    assert made == ["paper_quick_tiny_attainment.png", "paper_quick_tiny_goodput.png"], made
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.png")} == before
