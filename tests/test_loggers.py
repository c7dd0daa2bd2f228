"""W&B logging, offline: what ``serve.py`` and ``train.py agent=ppo`` hand to the tracker.

Files read (wandb 0.31, offline mode, under ``$WANDB_DIR/wandb/``): the run directories
``offline-run-*``; in each, ``run-<id>.wandb`` (the run's transaction log: protobuf records, in
which logged keys are stored verbatim) and ``files/media/images/<key>_*.png`` (logged figures).
wandb 0.31 has no Python reader of the transaction log, so keys are found in its bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from augserve.loggers import NULL_LOGGER, NullLogger

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("AUGSERVE_REQUIRE_WANDB") != "1":
    pytest.importorskip("wandb")


def _run(cmd: list[str], wandb_dir: Path, timeout: int) -> subprocess.CompletedProcess:
    wandb_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_SILENT="true")
    return subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _one_run(wandb_dir: Path) -> tuple[bytes, list[str]]:
    """(transaction log bytes, logged image names) of the only offline run under wandb_dir."""
    runs = sorted((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one W&B run, found {[r.name for r in runs]}"
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    images = sorted(p.name for p in (runs[0] / "files" / "media" / "images").glob("*.png"))
    return logs[0].read_bytes(), images


def test_null_logger_takes_every_call() -> None:
    for lg in (NULL_LOGGER, NullLogger(run_config={"seed": 0})):
        lg.log_summary("p", {"goodput": 1.0})
        lg.log_images({"x": "y.png"})
        lg.close()


def test_serve_logs_each_policy_summary_and_the_figures(tmp_path: Path) -> None:
    out, wdir = tmp_path / "out", tmp_path / "wb"
    p = _run(["serve.py", "logger=wandb", "policy=[vllm,infercept]", "workload.duration_s=20",
              "progress=false", f"hydra.run.dir={out}"], wdir, 300)
    assert p.returncode == 0, p.stderr[-3000:]
    log, images = _one_run(wdir)  # one run: the config is not instantiated a second time
    summary = json.loads((out / "vllm" / "summary.json").read_text())
    for policy in ("vllm", "infercept"):
        for key in ("goodput", "slo_attainment", "mean_ttft_ms", "p99_ttft_ms"):
            assert key in summary
            assert f"{policy}/{key}".encode() in log, f"{policy}/{key} not logged"
    assert b"oracle/goodput" not in log  # what did not run is not logged
    assert [n.split("_")[0] for n in images] == ["goodput", "ttft"], images
    assert b"engine" in log and b"llama3_8b_a100" in log  # the run's config went with it


def test_train_ppo_logs_training_rows_and_eval(tmp_path: Path) -> None:
    ck, out, wdir = tmp_path / "ck", tmp_path / "out", tmp_path / "wb"
    p = _run(["train.py", "agent=ppo", "logger=wandb", "agent.ppo.total_steps=128",
              "agent.ppo.n_envs=2", "agent.ppo.n_steps=32", "agent.ppo.stagger=8",
              "agent.env.workload.duration_s=4", "agent.env.k=8", "agent.env.max_decisions=30",
              "agent.net.hidden=16", "agent.eval.seeds=[0]", "agent.eval.settings={train:{}}",
              f"agent.checkpoint_dir={ck}", f"hydra.run.dir={out}", "progress=false"], wdir, 180)
    assert p.returncode == 0, p.stderr[-3000:]
    log, images = _one_run(wdir)
    rows = (out / "learning_curve.csv").read_text().splitlines()
    assert len(rows) >= 3  # header + one row per PPO iteration (2 here)
    for col in rows[0].split(","):
        assert f"train/{col}".encode() in log, f"train/{col} not logged"
    assert b"eval/train/ratio" in log and b"eval/train/rl_goodput" in log
    assert [n.split("_")[0] for n in images] == ["learning"], images
