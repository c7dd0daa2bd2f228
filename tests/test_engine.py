"""SimEngine: hand-computed timelines, invariants under random workloads, stretch skipping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from augserve.contract import EngineState, KVMode, RequestView
from augserve.engine.factory import make_sim_engine
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.infercept import InferCeptPolicy
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.oracle import OraclePolicy
from augserve.sched.vllm import VLLMPolicy

STEP = 0.01  # s, constant cost model


class FixedMode(KeyedPolicy):
    """FCFS with one KV mode for every call (test policy)."""

    def __init__(self, mode: KVMode, budget: int = 2048) -> None:
        self.mode = mode
        self.budget = budget
        self.name = f"fixed-{mode.value}"

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return self.mode


def one_request() -> AugRequest:
    # prompt 20; segment 0: 3 tokens, then a 0.1 s call returning 5 tokens; segment 1: 2 tokens
    return AugRequest("r0", 0.0, 20, (Segment(3, ToolCall("calc", 0.1, 5)), Segment(2)))


def engine(**kw):
    kw.setdefault("constant_step_s", STEP)
    kw.setdefault("audit", True)
    return make_sim_engine(profile="llama3_8b_a100", **kw)


@pytest.mark.parametrize("mode", [KVMode.PRESERVE, KVMode.VLLM, KVMode.DISCARD])
def test_single_request_timeline(mode: KVMode) -> None:
    # step 0 [0, .01): prefill 20 -> token 1 at .01; decode -> tokens 2, 3 at .02, .03.
    # The call runs .03 -> .13; the engine is idle and jumps to .13. Resume step [.13, .14):
    # prefill the last generated token + 5 returned (preserve) or the whole context
    # (vllm/discard, minus the cached prefix) -> token 4 at .14; decode -> token 5 at .15.
    res = engine().run([one_request()], FixedMode(mode))
    rec = res.records[0]
    assert rec.finished
    np.testing.assert_allclose(rec.token_s, [0.01, 0.02, 0.03, 0.14, 0.15])
    assert rec.tool_start_s == pytest.approx([0.03])
    assert rec.tool_return_s == pytest.approx([0.13])
    assert rec.seg_start_idx == [0, 3]
    assert rec.kv_modes == [mode.value]
    assert res.stats["end_free_blocks"] == res.stats["num_gpu_blocks"]
    if mode is KVMode.PRESERVE:
        assert rec.recomputed_tokens == 0 and rec.prefix_hit_tokens == 0
    else:
        # 22 tokens were computed at the call (prompt 20 + 2 decoded); 1 full block survives in
        # the prefix cache, the other 6 tokens are recomputed
        assert rec.prefix_hit_tokens == 16
        assert rec.recomputed_tokens == 6


@pytest.mark.parametrize("mode", [KVMode.VLLM, KVMode.DISCARD])
def test_no_prefix_cache_recomputes_everything(mode: KVMode) -> None:
    rec = engine(prefix_caching=False).run([one_request()], FixedMode(mode)).records[0]
    assert rec.prefix_hit_tokens == 0
    assert rec.recomputed_tokens == 22
    np.testing.assert_allclose(rec.token_s, [0.01, 0.02, 0.03, 0.14, 0.15])


def test_swap_timeline() -> None:
    # Swap-out of the 2 blocks is one pure-copy step [.03, .04) (nothing else runs); the call
    # returns at .13; swap-in is one copy step [.13, .14); then the resume prefill [.14, .15)
    # gives token 4 at .15 and token 5 at .16.
    res = engine().run([one_request()], FixedMode(KVMode.SWAP))
    rec = res.records[0]
    np.testing.assert_allclose(rec.token_s, [0.01, 0.02, 0.03, 0.15, 0.16])
    assert res.stats["swap_out_blocks"] == 2 and res.stats["swap_in_blocks"] == 2
    assert rec.recomputed_tokens == 0
    assert res.stats["end_free_blocks"] == res.stats["num_gpu_blocks"]


def test_swap_on_the_critical_path_costs_pcie_time() -> None:
    # PCIe slowed so that one 16-token block (2 MiB on llama3_8b) takes 25 ms, longer than a
    # 10 ms step: the budget from a 10 ms step is 1 block, and each copy step lasts 25 ms.
    # Out: [.03, .055), [.055, .08); the call returns at .13; in: [.13, .155), [.155, .18);
    # the resume prefill [.18, .19) gives token 4 at .19, token 5 at .20.
    eng = engine()
    eng.swap_bytes_per_s = 2 * 2**20 / 0.025
    res = eng.run([one_request()], FixedMode(KVMode.SWAP))
    np.testing.assert_allclose(res.records[0].token_s, [0.01, 0.02, 0.03, 0.19, 0.20])
    assert res.stats["swap_stall_s"] == pytest.approx(4 * (0.025 - STEP))


def test_same_content_keys_share_blocks_in_use_and_cached() -> None:
    # a and b have the same 160-token prefix (10 blocks of 16): admitted in the same step, b
    # takes a's blocks as they are named (V1 caches a block once it is full of scheduled
    # tokens), so the two hold 13 + 3 blocks, not 26; c comes later with the same row key and
    # hits the blocks left in the free queue; d has no key and hits nothing.
    pre = (("row:x", 160),)
    reqs = [AugRequest("a", 0.0, 200, (Segment(2),), prefix=pre),
            AugRequest("b", 0.0, 200, (Segment(2),), prefix=pre),
            AugRequest("c", 1.0, 200, (Segment(2),), prefix=pre),
            AugRequest("d", 2.0, 200, (Segment(2),))]
    eng = engine()
    run = eng.start(reqs, FixedMode(KVMode.PRESERVE))
    assert run.advance()
    run.step()
    assert run.pool.used == 13 + 3 and run.pool.shared_in_use == 10
    while run.advance():
        run.step()
    res = run.finish()
    hits = {r.rid: r.prefix_hit_tokens for r in res.records}
    assert hits == {"a": 0, "b": 160, "c": 160, "d": 0}
    assert res.stats["end_free_blocks"] == res.stats["num_gpu_blocks"]
    # without prefix caching nothing is shared
    res = engine(prefix_caching=False).run(reqs, FixedMode(KVMode.PRESERVE))
    assert all(r.prefix_hit_tokens == 0 for r in res.records)


def test_chunked_prefill_under_budget() -> None:
    # prompt 100 with a 40-token budget: chunks 40, 40, 20 -> first token at the end of step 3
    r = AugRequest("p", 0.0, 100, (Segment(2),))
    rec = engine().run([r], FixedMode(KVMode.PRESERVE, budget=40)).records[0]
    np.testing.assert_allclose(rec.token_s, [0.03, 0.04])


def test_preemption_by_recompute() -> None:
    # 4 blocks of 16 tokens. Two requests of prompt 30 (2 blocks each) fill the cache; the first
    # decode that needs a third block preempts the most recently admitted request (b).
    a = AugRequest("a", 0.0, 30, (Segment(10),))
    b = AugRequest("b", 0.0, 30, (Segment(10),))
    res = engine(num_gpu_blocks=4, max_num_seqs=4, max_num_batched_tokens=64,
                 prefix_caching=False).run([a, b], FixedMode(KVMode.PRESERVE, 64))
    ra, rb = res.records
    assert ra.preemptions == 0 and rb.preemptions == 1
    assert rb.recomputed_tokens > 0
    assert ra.finished and rb.finished
    assert ra.output_tokens == 10 and rb.output_tokens == 10
    assert rb.finish_s > ra.finish_s


def test_tool_pause_lasts_its_duration() -> None:
    r = AugRequest("t", 0.0, 10, (Segment(2, ToolCall("x", 0.237, 3)), Segment(1)))
    rec = engine().run([r], FixedMode(KVMode.PRESERVE)).records[0]
    assert rec.tool_return_s[0] - rec.tool_start_s[0] == pytest.approx(0.237)
    assert rec.token_s[rec.seg_start_idx[1]] >= rec.tool_return_s[0]


def test_rejects_request_longer_than_model() -> None:
    r = AugRequest("long", 0.0, 9000, (Segment(2),))
    with pytest.raises(ValueError, match="max_model_len"):
        engine().run([r], FixedMode(KVMode.PRESERVE))


def test_oracle_view_guard() -> None:
    class Peek(FixedMode):
        def on_intercept(self, view, state):
            view.script  # noqa: B018 - must raise for a non-oracle policy
            return KVMode.PRESERVE

    with pytest.raises(PermissionError):
        engine().run([one_request()], Peek(KVMode.PRESERVE))


# -------------------------------------------------------------------- random workloads
@st.composite
def workloads(draw):
    n = draw(st.integers(1, 12))
    reqs = []
    t = 0.0
    for i in range(n):
        t += draw(st.floats(0.0, 0.2))
        nseg = draw(st.integers(1, 4))
        segs = []
        for k in range(nseg):
            call = None
            if k < nseg - 1:
                call = ToolCall(draw(st.sampled_from(["a", "b"])), draw(st.floats(0.0, 0.5)),
                                draw(st.integers(0, 40)))
            segs.append(Segment(draw(st.integers(1, 60)), call))
        reqs.append(AugRequest(f"q{i}", t, draw(st.integers(1, 120)), tuple(segs)))
    return reqs


POLICIES = {
    "vllm": lambda: VLLMPolicy(64),
    "infercept": lambda: InferCeptPolicy(48, default_tool_s=0.1),
    "oracle": lambda: OraclePolicy(64),
    "preserve": lambda: FixedMode(KVMode.PRESERVE, 64),
    "discard": lambda: FixedMode(KVMode.DISCARD, 64),
    "swap": lambda: FixedMode(KVMode.SWAP, 64),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=workloads(), pol=st.sampled_from(sorted(POLICIES)), blocks=st.integers(24, 80),
       caching=st.booleans())
def test_invariants_random(reqs, pol, blocks, caching) -> None:
    eng = make_sim_engine(profile="llama3_8b_a100", num_gpu_blocks=blocks, max_num_seqs=8,
                          max_num_batched_tokens=64, prefix_caching=caching, audit=True,
                          swap_space_gib=0.01)
    res = eng.run(reqs, POLICIES[pol]())
    assert res.stats["end_free_blocks"] == blocks  # everything freed at the end
    for req, rec in zip(sorted(reqs, key=lambda r: r.arrival_s), res.records, strict=True):
        assert rec.rid == req.rid
        assert rec.finished
        assert rec.output_tokens == req.output_tokens  # output equals the script
        assert np.all(np.diff(rec.token_s) > 0)
        assert rec.token_s[0] > req.arrival_s
        assert len(rec.tool_start_s) == len(rec.tool_return_s) == req.num_calls
        for k, seg in enumerate(req.segments[:-1]):
            assert rec.tool_return_s[k] - rec.tool_start_s[k] == pytest.approx(
                seg.call.duration_s)
            assert rec.token_s[rec.seg_start_idx[k + 1]] >= rec.tool_return_s[k]
            assert rec.seg_start_idx[k + 1] - rec.seg_start_idx[k] == seg.gen_tokens


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=workloads(), pol=st.sampled_from(sorted(POLICIES)), blocks=st.integers(24, 400))
def test_stretch_skipping_is_exact(reqs, pol, blocks) -> None:
    out = []
    for skip in (True, False):
        eng = make_sim_engine(profile="llama3_8b_a100", num_gpu_blocks=blocks, max_num_seqs=8,
                              max_num_batched_tokens=64, skip_stretches=skip)
        out.append(eng.run(reqs, POLICIES[pol]()))
    a, b = out
    assert a.end_s == b.end_s
    for ra, rb in zip(a.records, b.records, strict=True):
        assert np.array_equal(ra.token_s, rb.token_s)
        assert ra.tool_return_s == rb.tool_return_s
        assert ra.kv_modes == rb.kv_modes
        assert ra.preemptions == rb.preemptions


def test_stretches_are_taken_and_exact_on_long_decodes() -> None:
    reqs = [AugRequest(f"s{i}", 0.05 * i, 50, (Segment(400, ToolCall("x", 1.0, 10)),
                                               Segment(300))) for i in range(20)]
    runs = [make_sim_engine(skip_stretches=s).run(reqs, VLLMPolicy()) for s in (True, False)]
    assert runs[0].stats["stretch_steps"] > 0.5 * runs[0].stats["steps"]
    assert runs[1].stats["stretch_steps"] == 0
    for ra, rb in zip(runs[0].records, runs[1].records, strict=True):
        assert np.array_equal(ra.token_s, rb.token_s)


def test_unfinished_requests_reported_at_time_limit() -> None:
    reqs = [AugRequest(f"u{i}", 0.0, 50, (Segment(500),)) for i in range(3)]
    res = make_sim_engine(max_time_s=1.0).run(reqs, VLLMPolicy())
    assert res.end_s >= 1.0
    assert not any(r.finished for r in res.records)
    assert all(0 < r.output_tokens < 500 for r in res.records)


def test_preempted_during_swap_in_drops_the_copy(monkeypatch) -> None:
    # A swaps its 51 blocks out during a 1 s call (1 block a step); B's decode grows meanwhile.
    # With 115 blocks A is re-admitted with ~1 block to spare and copies back at 1 block a step
    # while B's decode needs blocks -> A (most recently admitted) is preempted mid swap-in. Its
    # CPU copy must be dropped and none of its half-restored GPU blocks may count as cached.
    from augserve.engine import sim, tool_kv

    monkeypatch.setattr(tool_kv.ToolKV, "budget", lambda self, last_step_s: 1)
    reqs = [AugRequest("A", 0.0, 800, (Segment(2, ToolCall("t", 1.0, 1)), Segment(3))),
            AugRequest("B", 0.001, 905, (Segment(400),))]
    seen = []
    orig = sim.SimRun.preempt

    def spy(self, v):
        mid = v in self.kv.swapping_in
        orig(self, v)
        seen.append((v.req.rid, mid, v.cpu_blocks, v.swap_in_left, self.pool.cached("A")))

    monkeypatch.setattr(sim.SimRun, "preempt", spy)
    res = engine(num_gpu_blocks=115).run(reqs, FixedMode(KVMode.SWAP, 4096))
    mid = [s for s in seen if s[0] == "A" and s[1]]
    assert mid, "scenario must preempt A while it swaps in"
    assert all(s[2:] == (0, 0, 0) for s in mid)
    assert all(r.finished for r in res.records)


def test_zero_length_call_in_swap_mode_frees_swap_space() -> None:
    # the call returns before any copy step: the reserved swap space must be given back
    # (the audit checks swap bytes == blocks held in CPU or still to copy, every step)
    reqs = [AugRequest(f"z{i}", 0.01 * i, 40, (Segment(3, ToolCall("t", 0.0, 2)), Segment(2)))
            for i in range(5)]
    # each request holds 3 blocks of 2 MiB: 12 MiB of swap space fits two at once
    res = engine(swap_space_gib=12 / 1024).run(reqs, FixedMode(KVMode.SWAP))
    assert all(r.finished for r in res.records)
    assert all(r.kv_modes == ["swap"] for r in res.records)  # never fell back to discard


def test_partly_swapped_waiting_requests_do_not_deadlock_the_head() -> None:
    # 30 blocks; a and b (160-token prompts, 11 blocks each) call a 20 ms tool at .01 in swap
    # mode over a PCIe that copies one block per 8 ms: a gets 2 blocks out before its call
    # returns (the copy stops there), b none, so b runs on as if preserved and finishes at .04.
    # c (400 tokens, 25 blocks) arrived at .015 and heads the FCFS queue, but a waits holding
    # 9 GPU blocks, so with nothing running c could never fit and nothing would free them.
    # The engine drops a's partial KV (a preemption: a recomputes its 160 tokens) and admits c.
    reqs = [AugRequest("a", 0.0, 160, (Segment(1, ToolCall("t", 0.02, 2)), Segment(1))),
            AugRequest("b", 0.0, 160, (Segment(1, ToolCall("t", 0.02, 2)), Segment(1))),
            AugRequest("c", 0.015, 400, (Segment(1),))]
    eng = engine(num_gpu_blocks=30)
    eng.swap_bytes_per_s = 2 * 2**20 / 0.008
    res = eng.run(reqs, FixedMode(KVMode.SWAP))
    a, b, c = res.records
    assert all(r.finished for r in res.records)
    np.testing.assert_allclose(b.token_s, [0.01, 0.04])
    np.testing.assert_allclose(c.token_s, [0.05])  # admitted at .04, as soon as b left
    assert a.token_s[1] > c.token_s[0]
    assert (a.preemptions, a.recomputed_tokens) == (1, 160)
    assert res.stats["swap_out_blocks"] == 2 and res.stats["swap_in_blocks"] == 0
    assert res.stats["end_free_blocks"] == 30


def test_a_step_that_preempts_everything_running_is_not_a_deadlock() -> None:
    # Found by a random search: r0's swap-out is cut short by its call's return, and its
    # partial KV crowds the pool, so one step preempts every running request and schedules no
    # token with no event pending. The next step admits (freeing the partial KV if needed).
    r0 = AugRequest("r0", 0.01, 193, (Segment(4, ToolCall("t", 0.01, 38)),
                                       Segment(9, ToolCall("t", 0.02, 11)), Segment(3)))
    r1 = AugRequest("r1", 0.03, 137, (Segment(15, ToolCall("t", 0.01, 24)), Segment(15)))
    eng = engine(num_gpu_blocks=22)
    eng.swap_bytes_per_s = 2 * 2**20 / 0.008
    res = eng.run([r0, r1], FixedMode(KVMode.SWAP, 64))
    assert all(r.finished for r in res.records)
    assert [r.output_tokens for r in res.records] == [16, 30]
    assert res.stats["preemptions"] >= 1
    assert res.stats["end_free_blocks"] == 22


@pytest.mark.parametrize("mode", [KVMode.PRESERVE, KVMode.SWAP])
def test_resume_with_kv_waits_for_a_sequence_slot(mode: KVMode) -> None:
    # max_num_seqs=1: r0 calls a 0.1 s tool at .03, r1 takes the slot and decodes 30 tokens.
    # r0's tool returns at .13 with every slot taken. Preserved, it waits holding its KV (vLLM's
    # kv_holding_waiting) until r1 finishes, instead of running as a second sequence; swapped
    # out, it waits for re-admission. The audit checks running <= max_num_seqs every step.
    r0 = AugRequest("r0", 0.0, 20, (Segment(3, ToolCall("t", 0.1, 2)), Segment(2)))
    r1 = AugRequest("r1", 0.015, 20, (Segment(30),))
    res = engine(max_num_seqs=1).run([r0, r1], FixedMode(mode))
    a, b = res.records
    assert a.finished and b.finished
    assert a.token_s[3] > b.token_s[-1]  # r0 resumes only after r1 is done
    assert a.recomputed_tokens == 0  # its KV was kept meanwhile
    assert res.stats["end_free_blocks"] == res.stats["num_gpu_blocks"]
