"""VLLMEngine end to end on a tiny scripted workload (needs the vllm extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm]')")

from augserve.contract import Reject  # noqa: E402
from augserve.engine.base import Run  # noqa: E402
from augserve.engine.trace import read_trace  # noqa: E402
from augserve.metrics import summarize  # noqa: E402
from augserve.request import AugRequest, Segment, ToolCall  # noqa: E402
from augserve.sched import InferCeptPolicy, VLLMPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# vLLM keeps its distributed state per process: an engine destroyed while another is still in
# use tears it down for both. Engines made here live until the end of the module.
_ENGINES: list = []


def keep(eng):
    _ENGINES.append(eng)
    return eng


@pytest.fixture(scope="module", autouse=True)
def _engines_live_until_module_end():
    yield
    _ENGINES.clear()


def script() -> list[AugRequest]:
    """Five requests: 0-2 tool calls of 50-200 ms, prompts of 10-150 tokens."""
    def call(kind: str, s: float, ret: int) -> ToolCall:
        return ToolCall(kind, s, ret)

    return [
        AugRequest("r0", 0.00, 100, (Segment(5, call("calc", 0.05, 10)), Segment(4)), "math"),
        AugRequest("r1", 0.02, 10, (Segment(8),), "chatbot"),
        AugRequest("r2", 0.05, 150, (Segment(3, call("search", 0.2, 40)),
                                      Segment(6, call("search", 0.1, 5)), Segment(2)), "qa"),
        AugRequest("r3", 0.10, 40, (Segment(12),), "tts"),
        AugRequest("r4", 0.30, 64, (Segment(1, call("img", 0.05, 1)), Segment(1)), "image"),
    ]


@pytest.fixture(scope="module")
def engine():
    from augserve.vllm.engine import VLLMEngine

    return keep(VLLMEngine(num_gpu_blocks=48, max_num_seqs=4, max_num_batched_tokens=128,
                           max_model_len=1024, clock_scale=1.0))


def check_records(reqs: list[AugRequest], res) -> None:
    by = {r.rid: r for r in res.records}
    assert set(by) == {r.rid for r in reqs}
    for r in reqs:
        rec = by[r.rid]
        assert rec.finished, r.rid
        assert rec.output_tokens == r.output_tokens
        assert len(rec.seg_start_idx) == len(r.segments)
        assert rec.seg_start_idx[0] == 0
        assert np.all(np.diff(rec.token_s) >= 0)
        assert rec.token_s[0] >= r.arrival_s
        assert len(rec.tool_start_s) == len(rec.tool_return_s) == r.num_calls
        for k, seg in enumerate(r.segments[:-1]):
            assert rec.tool_return_s[k] - rec.tool_start_s[k] == pytest.approx(seg.call.duration_s)
            # the next segment starts after the tool returned
            assert rec.token_s[rec.seg_start_idx[k + 1]] >= rec.tool_return_s[k]
        assert rec.finish_s == rec.token_s[-1]
        assert rec.kv_modes == ["vllm"] * r.num_calls


class _Leaves(VLLMPolicy):
    """VLLMPolicy that records when it is told a request left the engine."""

    def reset(self, info) -> None:
        super().reset(info)
        self.left: list[str] = []

    def on_leave(self, view) -> None:
        assert view.generated_tokens == view.script.output_tokens  # only once it is done
        self.left.append(view.rid)
        super().on_leave(view)


def test_engine_runs_a_scripted_workload(engine) -> None:
    reqs = script()
    pol = _Leaves(128)
    pol.oracle = True  # to read the script in on_leave
    res = engine.run(reqs, pol)
    check_records(reqs, res)
    # each request leaves once, at its end, not at the end of every vLLM request (segment)
    assert sorted(pol.left) == sorted(r.rid for r in reqs)
    by = {r.rid: r for r in res.records}
    # continuations reuse the cached prefix: r2 has 150 + 3 + 40 tokens before segment 1
    assert by["r2"].prefix_hit_tokens >= 128
    assert res.stats["steps"] > 0 and res.stats["prefix_hit_tokens"] > 0
    s = summarize(res, "ttft:1000")
    assert s["completed"] == len(reqs)
    assert np.isfinite(s["median_ttft_ms"]) and s["median_ttft_ms"] > 0
    assert s["num_calls"] == 4


def test_room_after_running_matches_vllm_and_the_trace_is_written(engine, monkeypatch,
                                                                   tmp_path) -> None:
    # the pinned mirror of vLLM's running loop (augserve/vllm/mirror.py) against what vLLM
    # actually scheduled for the requests running at the start of each step without preemption
    from augserve.vllm import mirror

    assert mirror.check_version(__import__("vllm").__version__)
    engine.build()
    est: list[tuple[int, int, frozenset[str]]] = []
    orig_room = mirror.room_after_running

    def spy(sched, budget):
        room = orig_room(sched, budget)
        est.append((budget, room, frozenset(r.request_id for r in sched.running)))
        return room

    monkeypatch.setattr(mirror, "room_after_running", spy)
    sched = engine.sched
    orig_schedule = sched.schedule
    checked = []

    def schedule(*a, **kw):
        n = len(est)
        out = orig_schedule(*a, **kw)
        if len(est) > n and not out.preempted_req_ids:
            budget, room, running = est[-1]
            used = sum(t for rid, t in out.num_scheduled_tokens.items() if rid in running)
            checked.append((room, budget - used, bool(running)))
        return out

    monkeypatch.setattr(sched, "schedule", schedule)
    monkeypatch.setattr(engine, "decision_trace", str(tmp_path / "{policy}.jsonl"))
    reqs = script()
    res = engine.run(reqs, VLLMPolicy(64))  # a small budget: prefill chunks run beside decodes
    check_records(reqs, res)
    busy = [c for c in checked if c[2]]
    assert len(busy) >= 10
    assert all(room == actual for room, actual, _ in checked), checked
    lines = read_trace(tmp_path / "vllm.jsonl")
    kv = [tuple(k) for x in lines for k in x["kv"]]
    assert sorted(kv) == sorted((r.rid, "vllm") for r in res.records for _ in r.kv_modes)
    admitted = [rid for x in lines for rid in x["admitted"]]
    preempted = [rid for x in lines for rid in x["preempted"]]
    # one admission per vLLM request (a segment), plus one per resume after a preemption
    assert len(admitted) == sum(len(r.segments) for r in reqs) + len(preempted)
    assert all(x["budget"] == 64 for x in lines if x["budget"] is not None)


class _RejectsR3(VLLMPolicy):
    """FCFS that turns r3 away on arrival (admission control)."""

    def on_enqueue(self, view, state):
        if view.rid == "r3":
            return Reject("over capacity")
        return super().on_enqueue(view, state)


def test_rejected_request_is_aborted_and_recorded(engine) -> None:
    reqs = script()
    engine.build()
    before = engine.sched.rejections
    res = engine.run(reqs, _RejectsR3(128))
    by = {r.rid: r for r in res.records}
    assert by["r3"].rejected == "over capacity" and not by["r3"].finished
    assert by["r3"].output_tokens == 0
    rest = [r for r in reqs if r.rid != "r3"]
    check_records(rest, type(res)([by[r.rid] for r in rest], res.end_s, res.stats))
    assert engine.sched.rejections == before + 1
    assert not engine.llm.has_unfinished_requests()
    assert summarize(res, "ttft:100000")["rejected"] == 1
    # the engine serves the next run normally
    check_records(reqs, engine.run(reqs, VLLMPolicy(128)))


def test_engine_is_reusable_and_records_requested_kv_modes(engine) -> None:
    reqs = script()
    res = engine.run(reqs, InferCeptPolicy(128))
    check_records(reqs, res)
    modes = res.stats["requested_kv_modes"]
    assert sum(modes.values()) == 4 and "vllm" not in modes


def test_stepwise_interface_for_the_rl_env(engine) -> None:
    reqs = script()
    run = engine.start(reqs, VLLMPolicy(128))
    decisions = 0
    while run.advance():
        st = run.state()
        assert st.num_waiting >= 1 and st.free_blocks > 0
        run.step()
        decisions += 1
    res = run.finish()
    assert decisions >= 1
    assert isinstance(run, Run)
    assert run.player.n_finished == len(reqs) == len(run.player.drain_finished())
    assert all(r.generated() == r.req.output_tokens for r in run.reqs)
    assert len(run.step_log) == res.stats["steps"]
    check_records(reqs, res)


def test_small_kv_cache_preempts_and_counts_recompute() -> None:
    from augserve.vllm.engine import VLLMEngine

    eng = keep(VLLMEngine(num_gpu_blocks=17, max_num_seqs=4, max_num_batched_tokens=128,
                          max_model_len=512, warmup=False))
    reqs = [AugRequest(f"p{i}", 0.0, 200, (Segment(150),)) for i in range(3)]
    res = eng.run(reqs, VLLMPolicy(128))
    assert all(r.finished for r in res.records)
    assert sum(r.preemptions for r in res.records) >= 1
    assert sum(r.recomputed_tokens for r in res.records) > 0


def test_workload_that_cannot_fit_is_an_error(engine) -> None:
    big = [AugRequest("x", 0.0, 2000, (Segment(10),))]
    with pytest.raises(ValueError, match="max_model_len"):
        engine.run(big, VLLMPolicy(128))


def test_serve_py_engine_vllm(tmp_path: Path) -> None:
    """The Hydra wiring: engine=vllm selects conf/engine/vllm.yaml."""
    cmd = [sys.executable, "serve.py", "engine=vllm", "policy=vllm", "workload.rate=1",
           "workload.duration_s=3", "engine.clock_scale=100", "plots=false", "progress=false",
           f"hydra.run.dir={tmp_path}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads((tmp_path / "vllm" / "summary.json").read_text())
    assert s["completed"] == s["num_requests"] >= 1
    assert s["engine_engine"] == "vllm"


def test_rl_env_accepts_the_live_engine(engine) -> None:
    pytest.importorskip("gymnasium")
    pytest.importorskip("lightgbm")
    from augserve.vllm.workload import ScaledWorkload
    from augserve.workload import make_augmix
    from predictors.artifact import load_predictor
    from rl.env import SchedulingEnv

    wl = ScaledWorkload(make_augmix(rate=4.0, duration_s=2), 0.1, 0.01, 1024)
    env = SchedulingEnv(engine, wl, load_predictor(str(ROOT / "data/predictors/lgbm")), k=8,
                        budget_bins=(64, 128))
    obs, info = env.reset(seed=0)
    assert obs["items"].shape == (8, env.obs_spec.f) and info["requests"] >= 1
    done, steps = False, 0
    while not done:
        obs, _, term, trunc, info = env.step(env.action_space.sample())
        done = term or trunc
        steps += 1
    assert term and info["decisions"] == steps
    assert all(r.finished for r in env.result().records)


def test_cpu_clock_and_profile_timings() -> None:
    from augserve.vllm.deploy import profile_timing
    from augserve.vllm.engine import VLLMEngine

    with pytest.raises(ValueError, match="num_threads=1"):
        VLLMEngine(clock="cpu", num_threads=2)
    eng = keep(VLLMEngine(num_gpu_blocks=48, max_num_seqs=4, max_num_batched_tokens=128,
                          max_model_len=1024, clock="cpu", clock_scale=2.0,
                          profile="cpu_tiny_llama", warmup=False))
    reqs = script()
    run = eng.start(reqs, VLLMPolicy(128))
    floor, per_tok = profile_timing("cpu_tiny_llama")
    info = run.state().info
    assert info.step_floor_s == pytest.approx(2 * floor)  # engine seconds
    assert info.prefill_s_per_token == pytest.approx(2 * per_tok)
    while run.advance():
        run.step()
    res = run.finish()
    check_records(reqs, res)
    assert res.stats["clock"] == "cpu" and res.stats["stolen_s"] >= 0
    assert res.stats["wall_s"] >= res.end_s / 2


def test_calibrate_writes_a_profile_and_prints_the_fidelity_table(tmp_path: Path) -> None:
    """python -m augserve.calibrate end to end on the tiny model (short runs: the error figures
    of so few steps are not the point; docs/vllm.md has the full-size table)."""
    from augserve.engine.cost import LinearCostModel, load_profile

    prof, rep = tmp_path / "cpu_tiny_test.yaml", tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "augserve.calibrate", "--model", "data/models/tiny_llama",
         "--name", "cpu_tiny_test", "--out", str(prof), "--json", str(rep),
         "--profile-rates", "2", "--profile-duration", "4", "--duration", "3",
         "--overload-duration", "3", "--light-rate", "1", "--overload-rate", "6",
         "--tool-scale", "0.01"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    cost = LinearCostModel(load_profile(str(prof)))  # a valid profile SimEngine can load
    assert 0 < cost.step_time(1, 0, 0.0) < cost.step_time(512, 0, 0.0) < 1.0
    report = json.loads(rep.read_text())
    assert report["fit"]["steps"] > 50 and np.isfinite(report["fit"]["median"])
    for regime in ("light load", "overload"):
        assert report[regime]["live"]["completed"] == report[regime]["live"]["num_requests"] > 0
        assert report[regime]["sim"]["num_requests"] == report[regime]["live"]["num_requests"]
    for metric in ("TTFT p50", "TPOT p90", "E2EL p50", "E2EL p90"):
        assert out.stdout.count(metric) >= 2, out.stdout[-2000:]  # one row per regime


def test_requests_with_the_same_content_keys_share_prompt_blocks(engine) -> None:
    # b's prompt starts with a's first 160 tokens (the same content key: a shared tool-schema
    # preamble, say); c's prompt has no shared prefix. The live engine derives the prompt ids
    # from the keys, so vLLM's own prefix cache finds what the simulator's key model finds.
    pre = (("schema:test", 160),)
    a = AugRequest("a", 0.0, 200, (Segment(4),), prefix=pre)
    b = AugRequest("b", 1.0, 180, (Segment(4),), prefix=pre)
    c = AugRequest("c", 1.5, 200, (Segment(4),))
    res = engine.run([a, b, c], VLLMPolicy(128))
    bs = engine.info().block_size
    by = {r.rid: r for r in res.records}
    assert by["a"].prefix_hit_tokens == 0
    assert by["b"].prefix_hit_tokens == 160 // bs * bs
    assert by["c"].prefix_hit_tokens == 0
