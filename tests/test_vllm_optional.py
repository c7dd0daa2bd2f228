"""The parts of augserve.vllm that run without vLLM: the missing-extra message, the policy
factory, hint predictions, workload scaling and the calibration fit."""

from __future__ import annotations

import importlib.util
import math
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import augserve.vllm as av
from augserve.contract import RequestView, State
from augserve.engine.cost import LinearCostModel, Profile
from augserve.engine.cost_fit import fit_cost, predict, rel_errors, weights_bytes
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.augserve import AugServePolicy
from augserve.sched.infercept import InferCeptPolicy
from augserve.sched.vllm import VLLMPolicy
from augserve.vllm.deploy import HintPredictor, make_policy, profile_timing
from augserve.vllm.runtime import ServedRuntime, VRuntime
from augserve.vllm.workload import ScaledWorkload, scale_request

ROOT = Path(__file__).resolve().parents[1]


def test_missing_vllm_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    assert not av.vllm_available()
    with pytest.raises(av.VLLMNotInstalled, match=r"pip install .*\[vllm\]"):
        av.require_vllm()
    with pytest.raises(av.VLLMNotInstalled):
        av.AugServeScheduler  # noqa: B018 - the lazy attribute raises
    from augserve.vllm.engine import make_vllm_engine

    with pytest.raises(av.VLLMNotInstalled, match="engine=sim"):
        make_vllm_engine()
    from augserve.calibrate import main

    assert main([]) == 2


# serve.py in a process where vLLM cannot be imported, installed or not (sys.modules[x] = None
# makes both `import x` and importlib.util.find_spec(x) report it missing)
_WITHOUT_VLLM = ("import runpy, sys; sys.modules['vllm'] = None; sys.argv[0] = 'serve.py'; "
                 "runpy.run_path('serve.py', run_name='__main__')")


def test_serve_py_engine_vllm_without_vllm_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _WITHOUT_VLLM, "engine=vllm", "policy=vllm",
                          "workload.duration_s=1", "plots=false", "progress=false",
                          f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "vLLM is not installed" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_make_policy_from_additional_config() -> None:
    assert isinstance(make_policy({}, 512), VLLMPolicy)
    assert make_policy({}, 512).budget == 512
    p = make_policy({"policy": "infercept", "max_num_batched_tokens": 256}, 512)
    assert isinstance(p, InferCeptPolicy) and p.budget == 256
    a = make_policy({"policy": "augserve", "slo": "ttft:500",
                     "policy_kwargs": {"dynamic_budget": False}}, 512)
    assert isinstance(a, AugServePolicy) and isinstance(a.predictor, HintPredictor)
    assert a.ttft_s == 0.5 and a.token_budget(None) == 512  # type: ignore[arg-type]
    q = make_policy({"policy": "augserve.sched.vllm.VLLMPolicy"}, 64)
    assert isinstance(q, VLLMPolicy)
    with pytest.raises(ValueError, match="unknown augserve setting 'polcy'"):
        make_policy({"polcy": "vllm"}, 512)
    with pytest.raises(ValueError, match="unknown augserve policy"):
        make_policy({"policy": "nope"}, 512)
    with pytest.raises(ValueError, match="oracle"):
        make_policy({"policy": "augserve.sched.oracle.OraclePolicy"}, 512)


def test_make_policy_loads_a_predictor_artifact() -> None:
    pytest.importorskip("lightgbm")
    a = make_policy({"policy": "augserve", "predictor": str(ROOT / "data/predictors/lgbm")}, 512)
    assert isinstance(a.predictor, HintPredictor) and a.predictor.base is not None


def _view(meta: dict, generated: int = 0, calls: int = 0) -> RequestView:
    rt = SimpleNamespace(
        req=SimpleNamespace(rid="x", arrival_s=0.0, prompt_tokens=10, prompt_text=None,
                            aug_type="qa", metadata=meta),
        state=State.WAITING, seg_idx=calls, generated=lambda: generated,
        return_lengths=[1] * calls, tool_durations=[0.1] * calls)
    return RequestView(rt)


def test_hint_predictor() -> None:
    hp = HintPredictor(output_tokens=100, num_calls=1, tool_s=2.0)
    views = [_view({"predicted_output_tokens": 50, "predicted_num_calls": 3,
                    "predicted_tool_s": 0.5}, generated=20, calls=1), _view({})]
    p = hp.predict(views)
    assert list(p.output_tokens) == [50, 100] and list(p.num_calls) == [3, 1]
    assert list(p.tool_s) == [0.5, 2.0]
    r = hp.predict_remaining(views)
    assert list(r.output_tokens) == [30, 100] and list(r.num_calls) == [2, 1]
    assert r.rank_score[0] < r.rank_score[1]


def test_served_runtime_reads_hints_from_extra_args() -> None:
    vreq = SimpleNamespace(
        request_id="r-1", arrival_time=105.0, num_prompt_tokens=40, num_tokens=45,
        num_output_tokens=5, num_computed_tokens=44, status=SimpleNamespace(name="RUNNING"),
        sampling_params=SimpleNamespace(extra_args={
            "aug_type": "math", "tool": "calc", "tool_durations": [0.2], "return_lengths": [3],
            "generated_tokens": 12, "arrival_s": 101.0, "source": "toolbench"}))
    rt = ServedRuntime(vreq, block_size=32, t0=100.0)
    v = rt.view
    assert (v.rid, v.aug_type, v.current_tool, v.calls_done) == ("r-1", "math", "calc", 1)
    assert v.arrival_s == 1.0 and v.submit_s == 5.0
    assert v.generated_tokens == 17 and v.context_tokens == 45 and v.computed_tokens == 44
    assert v.blocks_held == 2 and v.state is State.RUNNING and not v.preempted
    assert v.metadata["source"] == "toolbench"
    idle = VRuntime(AugRequest("a", 0.0, 8, (Segment(1),)), 32, 0.0)
    assert idle.view.state is State.FINISHED and idle.view.context_tokens == 8


def test_scaled_workload() -> None:
    r = AugRequest("a", 1.0, 400, (Segment(100, ToolCall("t", 10.0, 40)), Segment(3)), "qa")
    s = scale_request(r, 0.25, 0.1)
    assert s.prompt_tokens == 100 and s.segments[0].gen_tokens == 25
    assert s.segments[0].call.return_tokens == 10
    assert s.segments[0].call.duration_s == pytest.approx(1.0)
    assert s.segments[1].gen_tokens == 1 and s.arrival_s == 1.0 and s.aug_type == "qa"
    from augserve.workload import make_augmix

    base = make_augmix(rate=2.0, duration_s=10)
    w = ScaledWorkload(base, 0.25, 0.05, max_model_len=600)
    a, b = base.requests(3), w.requests(3)
    assert [x.arrival_s for x in a] == [x.arrival_s for x in b]
    assert all(x.final_context <= 600 for x in b)
    assert w.duration_s == 10


def test_fit_recovers_a_known_cost_model() -> None:
    true = dict(c0_s=0.004, t_floor_s=0.02, a_s=0.0, b_s_per_token=5e-4,
                d_s_per_ctx_token=2e-7, e_s_per_token_ctx=3e-7)
    rng = np.random.default_rng(0)
    n = rng.integers(1, 512, 400).astype(float)
    ctx = rng.integers(0, 8000, 400).astype(float)
    attn = np.where(rng.random(400) < 0.5, 0.0, rng.random(400) * 2e5)
    feats = np.column_stack([n, ctx, attn])
    t = predict(true, feats) * (1 + 0.01 * rng.standard_normal(400))
    coef = fit_cost(feats, t)
    assert np.median(rel_errors(coef, feats, t)) < 0.02
    assert coef["b_s_per_token"] == pytest.approx(5e-4, rel=0.05)
    assert coef["t_floor_s"] == pytest.approx(0.02, rel=0.15)
    # the fitted coefficients make a valid profile with the same step times
    prof = Profile(name="x", model="m", gpu="cpu", max_model_len=1024, kv_bytes_per_token=1,
                   weights_bytes=1, gpu_mem_bytes=10**6, pcie_bytes_per_s=1.0, **coef)
    cost = LinearCostModel(prof)
    assert np.allclose(cost.step_times(n, ctx, attn), predict(coef, feats))
    with pytest.raises(ValueError, match="too few"):
        fit_cost(feats[:3], t[:3])


def test_weights_bytes_of_the_shipped_configs() -> None:
    assert weights_bytes(ROOT / "data/models/tiny_llama") < 10 * 2**20
    params = weights_bytes(ROOT / "data/models/llama_170m") / 2
    assert 150e6 < params < 190e6
    assert math.isfinite(profile_timing("llama3_8b_a100")[0])
    assert profile_timing(None) == (None, None)


def test_serve_py_server_openai_builds_the_server_command(tmp_path: Path) -> None:
    """serve.py server=openai: the printed command is server_command's (tested over HTTP in
    test_vllm_server.py) and its --additional-config builds the selected policy."""
    import json

    out = subprocess.run([sys.executable, "serve.py", "server=openai", "policy=augserve",
                          "server.print_only=true", "server.port=8123", "slo.spec=ttft:500",
                          "policies.augserve.starve_after_s=7", f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    argv = shlex.split(out.stdout.strip().splitlines()[-1])  # pasteable into a shell

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and flag("--port") == "8123"
    assert flag("--scheduler-cls") == "augserve.vllm.AugServeAsyncScheduler"
    assert flag("--logits-processors") == "augserve.vllm.validation:HintValidator"
    cfg = json.loads(flag("--additional-config"))["augserve"]
    assert cfg["slo"] == "ttft:500" and cfg["predictor"] == "data/predictors/lgbm"
    pol = make_policy(cfg, 2048)
    assert isinstance(pol, AugServePolicy) and pol.ttft_s == 0.5
    assert pol.starve_after == 7.0 and pol.predictor.base is not None
    two = subprocess.run([sys.executable, "serve.py", "server=openai", "server.print_only=true",
                          f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode != 0 and "serves one policy" in two.stderr


def test_serve_py_server_openai_with_the_learned_policy(tmp_path: Path) -> None:
    """policy=rl_ckpt on the server: the checkpoint and the default predictor go along."""
    import json

    from rl.rl_policy import RLPolicy

    out = subprocess.run([sys.executable, "serve.py", "server=openai", "policy=rl_ckpt",
                          "server.print_only=true", "~predictor", "slo.spec=ttft:500",
                          "server.async_scheduling=false", f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    argv = shlex.split(out.stdout.strip().splitlines()[-1])
    assert argv[-1] == "--no-async-scheduling"
    cfg = json.loads(argv[argv.index("--additional-config") + 1])
    assert cfg["augserve"]["policy"] == "rl_ckpt"
    assert cfg["augserve"]["predictor"] == "data/predictors/lgbm"
    pol = make_policy(cfg["augserve"], 2048)
    assert isinstance(pol, RLPolicy) and pol.checkpoint == "data/rl/ppo"
    assert pol.ttft_s == 0.5  # the SLO reaches a policy that takes it through **kwargs


def test_serve_py_server_openai_without_vllm_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _WITHOUT_VLLM, "server=openai", "policy=vllm",
                          f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "vLLM is not installed" in out.stderr and "Traceback" not in out.stderr


def test_make_policy_takes_factories_and_refuses_what_is_not_a_policy() -> None:
    from rl.rl_policy import RLPolicy

    rl = make_policy({"policy": "rl.rl_policy.make_rl_policy", "slo": "ttft:250",
                      "policy_kwargs": {"checkpoint": "data/rl/ppo"}}, 2048)
    assert isinstance(rl, RLPolicy) and rl.ttft_s == 0.25
    with pytest.raises(TypeError, match="not an augserve Policy"):
        make_policy({"policy": "builtins.dict"}, 512)
    with pytest.raises(TypeError, match="built a str"):
        make_policy({"policy": "os.getcwd"}, 512)


def test_live_engine_default_is_live_sized() -> None:
    """engine=vllm on the default workload composes a ~1 min run and says so; overrides win."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        live = compose("serve", ["engine=vllm", "policy=augserve"])
        longer = compose("serve", ["engine=vllm", "policy=augserve", "workload.duration_s=120"])
        sim = compose("serve")
        other = compose("serve", ["engine=vllm", "workload=infercept_json"])
    assert (live.workload.rate, live.workload.duration_s) == (1.0, 20)
    assert "live-sized default" in live.note and "workload.duration_s=" in live.note
    assert (longer.workload.rate, longer.workload.duration_s) == (1.0, 120)
    assert (sim.workload.rate, sim.workload.duration_s, sim.note) == (9.0, 600, None)
    assert other.workload.duration_s == 1800 and other.note is None
