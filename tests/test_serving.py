"""serve.py and the runner: determinism, Hydra single runs and multirun sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from augserve.engine.factory import make_sim_engine
from augserve.sched import InferCeptPolicy, OraclePolicy, VLLMPolicy
from augserve.serving import run_policies
from augserve.workload import make_augmix

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _run(tmp: Path, seed: int) -> dict[str, bytes]:
    pols = {"vllm": VLLMPolicy(), "infercept": InferCeptPolicy(), "oracle": OraclePolicy()}
    run_policies(make_augmix(rate=8.0, duration_s=40), make_sim_engine(), pols, "ttft:1000",
                 seed, tmp, progress=False, plots=False)
    return {p: (tmp / p / "requests.csv").read_bytes() for p in pols}


def test_same_seed_identical_csv_and_all_policies_same_arrivals(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", seed=3)
    b = _run(tmp_path / "b", seed=3)
    c = _run(tmp_path / "c", seed=4)
    assert a == b
    assert a["vllm"] != c["vllm"]

    def arrivals(blob: bytes) -> list[str]:
        lines = blob.decode().splitlines()
        idx = lines[0].split(",").index("arrival_s")
        return [ln.split(",")[idx] for ln in lines[1:]]

    assert arrivals(a["vllm"]) == arrivals(a["infercept"]) == arrivals(a["oracle"])


def _serve(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "serve.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_serve_default_comparison_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _serve("workload.duration_s=30", "progress=false", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    for f in ("comparison.md", "summary.csv", "ttft_cdf.png", "goodput.png",
              "vllm/requests.csv", "infercept/summary.json", "oracle/summary.json",
              ".hydra/config.yaml"):
        assert (out / f).is_file(), f
    s = json.loads((out / "vllm" / "summary.json").read_text())
    assert s["num_requests"] > 0 and s["slo"] == {"ttft": 1000.0}
    assert str(out) in p.stdout


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside the repo")
def test_serve_one_policy_on_infercept_json(tmp_path: Path) -> None:
    out = tmp_path / "one"
    p = _serve("policy=infercept", "workload=infercept_json", "workload.rate=3.0", "seed=1",
               "workload.duration_s=60", f"data_dir={DATA}", "progress=false",
               f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    assert sorted(d.name for d in out.iterdir() if d.is_dir() and d.name[0] != ".") == [
        "infercept"]
    s = json.loads((out / "infercept" / "summary.json").read_text())
    assert s["seed"] == 1 and s["completed"] == s["num_requests"] > 100


def test_multirun_sweep(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    p = _serve("-m", "workload.rate=2,4", "policy=vllm,infercept", "workload.duration_s=20",
               "progress=false", "plots=false", f"hydra.sweep.dir={out}")
    assert p.returncode == 0, p.stderr
    jobs = sorted(d for d in out.iterdir() if d.is_dir())
    assert len(jobs) == 4
    for j in jobs:
        assert (j / "summary.csv").is_file()


def test_bad_override_is_a_clear_error(tmp_path: Path) -> None:
    p = _serve("policy=infercept", "policies.infercept.max_num_batched_tokens=0",
               "workload.duration_s=5", f"hydra.run.dir={tmp_path}")
    assert p.returncode != 0
    assert "max_num_batched_tokens=0" in p.stderr
