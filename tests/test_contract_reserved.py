"""What the contract reserves for later policies, applied by the simulator: KV time-to-live,
admission rejection, session identity; the per-turn record fields every SLO check reads; the
per-step decision trace; the Run protocol."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from augserve.contract import (
    EngineState,
    KVDecision,
    KVMode,
    Reject,
    RequestView,
    kv_decision,
)
from augserve.engine.base import Run
from augserve.engine.factory import make_sim_engine
from augserve.engine.trace import read_trace
from augserve.metrics import per_request_table, summarize
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.keyed import KeyedPolicy
from augserve.slo import parse_slo, record_meets, record_values
from augserve.workload.trace_jsonl import read_trace as read_workload
from augserve.workload.trace_jsonl import write_trace

STEP = 0.01  # s, constant cost model


def engine(**kw):
    kw.setdefault("constant_step_s", STEP)
    kw.setdefault("audit", True)
    return make_sim_engine(profile="llama3_8b_a100", **kw)


class Answers(KeyedPolicy):
    """FCFS answering every call with ``decision`` and rejecting ids in ``reject``."""

    name = "answers"

    def __init__(self, decision: KVMode | KVDecision = KVMode.PRESERVE,
                 reject: frozenset[str] = frozenset()) -> None:
        self.decision = decision
        self.reject = reject
        self.sessions: dict[str, str] = {}

    def token_budget(self, state: EngineState) -> int:
        return 2048

    def on_enqueue(self, view: RequestView, state: EngineState) -> Reject | None:
        self.sessions[view.rid] = view.session_id
        if view.rid in self.reject:
            return Reject("over capacity")
        return super().on_enqueue(view, state)

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode | KVDecision:
        return self.decision


def one_call(rid: str = "r0", call_s: float = 1.0, arrival_s: float = 0.0) -> AugRequest:
    # prompt 20; 3 tokens; a call of call_s returning 5 tokens; 2 tokens
    return AugRequest(rid, arrival_s, 20, (Segment(3, ToolCall("calc", call_s, 5)), Segment(2)))


# ------------------------------------------------------------------------ KV time-to-live
def test_kv_decision_validates_its_fields() -> None:
    assert kv_decision(KVMode.SWAP) == KVDecision(KVMode.SWAP, None)
    assert kv_decision("discard").mode is KVMode.DISCARD
    assert kv_decision(KVDecision(KVMode.PRESERVE, 0.5)).ttl_s == 0.5
    with pytest.raises(ValueError, match="ttl_s applies to 'preserve' only"):
        kv_decision(KVDecision(KVMode.SWAP, 1.0))
    with pytest.raises(ValueError, match="ttl_s must be a finite number"):
        kv_decision(KVDecision(KVMode.PRESERVE, -1.0))
    with pytest.raises(ValueError, match="ttl_s must be a finite number"):
        kv_decision(KVDecision(KVMode.PRESERVE, math.nan))
    with pytest.raises(ValueError):
        kv_decision("keep")


def test_ttl_shorter_than_the_call_frees_the_kv_at_its_end() -> None:
    # tokens at .01 .02 .03; the 1 s call starts at .03; TTL 0.2 s: the blocks are freed at .23
    # and on return (1.03) the context is rebuilt as after a discard (a prefix hit + recompute)
    ttl = 0.2
    res = engine().run([one_call(call_s=1.0)], Answers(KVDecision(KVMode.PRESERVE, ttl)))
    rec = res.records[0]
    discard = engine().run([one_call(call_s=1.0)], Answers(KVMode.DISCARD)).records[0]
    assert rec.finished and rec.kv_expired == 1
    assert summarize(res, None)["kv_ttl_expired"] == 1
    assert rec.kv_modes == ["preserve"]  # what the policy decided
    assert rec.prefix_hit_tokens == discard.prefix_hit_tokens == 16
    assert rec.recomputed_tokens == discard.recomputed_tokens == 6
    np.testing.assert_allclose(rec.token_s, discard.token_s)


def test_ttl_frees_blocks_that_a_waiting_request_then_gets() -> None:
    # r0 holds the only KV during a long call; r1 arrives meanwhile and fits only once r0's
    # blocks are freed. A TTL pin is reclaimable: with nothing running, the engine frees it for
    # r1 at once (Continuum's admission fallback), instead of waiting for its TTL's end (0.5)
    # or, without a TTL, for the tool's return (5.0) and r0's end (token 5 at 5.05)
    blocks = 3  # 48 tokens: r0's 23 tokens of context take 2 blocks, r1's 30-token prompt 2
    r0 = AugRequest("r0", 0.0, 20, (Segment(3, ToolCall("t", 5.0, 1)), Segment(2)))
    r1 = AugRequest("r1", 0.05, 30, (Segment(2),))
    for ttl, first_r1 in ((0.5, 0.05), (None, 5.05)):
        dec = KVDecision(KVMode.PRESERVE, ttl)
        res = engine(num_gpu_blocks=blocks).run([r0, r1], Answers(dec))
        rec1 = res.records[1]
        assert rec1.finished
        assert rec1.token_s[0] == pytest.approx(first_r1 + STEP, abs=1e-9)
        assert res.records[0].kv_reclaimed == (0 if ttl is None else 1)  # before its TTL
        assert res.records[0].kv_expired == 0
        assert res.stats["pins_reclaimed"] == (0 if ttl is None else 1)


def test_ttl_longer_than_the_call_changes_nothing() -> None:
    kept = engine().run([one_call(call_s=0.1)], Answers(KVDecision(KVMode.PRESERVE, 5.0)))
    plain = engine().run([one_call(call_s=0.1)], Answers(KVMode.PRESERVE))
    assert kept.records[0].kv_expired == 0
    np.testing.assert_array_equal(kept.records[0].token_s, plain.records[0].token_s)
    assert kept.records[0].recomputed_tokens == 0


# ------------------------------------------------------------------------ rejection
def test_rejected_request_never_runs_and_misses_the_slo() -> None:
    reqs = [one_call("a"), one_call("b", arrival_s=0.001)]
    res = engine().run(reqs, Answers(reject=frozenset({"b"})))
    a, b = res.records
    assert a.finished and a.rejected is None
    assert not b.finished and b.rejected == "over capacity"
    assert b.output_tokens == 0 and b.finish_s == pytest.approx(0.001)
    s = summarize(res, "ttft:100000")
    assert (s["rejected"], s["unfinished"], s["good_requests"]) == (1, 1, 1)
    assert res.stats["end_free_blocks"] == res.stats["num_gpu_blocks"]
    slo = parse_slo("ttft:100000")
    assert record_meets(a, slo) and not record_meets(b, slo)
    rows = per_request_table(res.records, "ttft:100000")
    assert [r["meets_slo"] for r in rows] == [True, False]


def test_reject_after_a_request_ran_is_an_error() -> None:
    class LateReject(Answers):
        def on_enqueue(self, view, state):
            if view.calls_done:  # the resume after the tool call
                return Reject("too late")
            return super().on_enqueue(view, state)

    with pytest.raises(RuntimeError, match="rejected r0 after it ran"):
        engine().run([one_call()], LateReject(KVMode.DISCARD))


# ------------------------------------------------------------------------ session identity
def test_session_id_defaults_to_the_request_and_survives_a_trace(tmp_path) -> None:
    reqs = [one_call("a"), AugRequest("b", 0.01, 20, (Segment(2),), session_id="chat-7")]
    pol = Answers()
    engine().run(reqs, pol)
    assert pol.sessions == {"a": "a", "b": "chat-7"}
    write_trace(tmp_path / "t.jsonl", reqs)
    back = read_workload(tmp_path / "t.jsonl")
    assert [r.session_id for r in back] == [None, "chat-7"]
    assert "session_id" not in json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    (tmp_path / "bad.jsonl").write_text(
        '{"rid": "x", "arrival_s": 0, "prompt_tokens": 3, "session_id": 5, '
        '"segments": [{"gen_tokens": 1, "call": null}]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field .session_id."):
        read_workload(tmp_path / "bad.jsonl")


# ------------------------------------------------------------------------ per-turn record
def test_per_turn_fields_match_the_token_history() -> None:
    reqs = [AugRequest(f"r{i}", 0.02 * i, 20 + i,
                       (Segment(3, ToolCall("t", 0.1 * (i + 1), 4)),
                        Segment(4, ToolCall("u", 0.05, 2)), Segment(2)))
            for i in range(6)]
    res = engine(num_gpu_blocks=12).run(reqs, Answers(KVMode.DISCARD))
    for rec in res.records:
        assert rec.finished
        assert rec.seg_first_s == [float(rec.token_s[i]) for i in rec.seg_start_idx]
        assert rec.ttft_s == pytest.approx(rec.token_s[0] - rec.arrival_s)
        resume = [rec.token_s[rec.seg_start_idx[k + 1]] - ret
                  for k, ret in enumerate(rec.tool_return_s)]
        assert rec.resume_s == pytest.approx(resume)
        values = record_values(rec)
        assert values["resume"] == pytest.approx(max(resume))
    # the resume SLO judges every turn: a threshold below the worst resume latency fails
    worst = max(max(r.resume_s) for r in res.records)
    assert all(record_meets(r, {"resume": worst * 1000 + 1}) for r in res.records)
    assert not all(record_meets(r, {"resume": worst * 1000 - 1}) for r in res.records)
    # the metrics' judgement is the record's, for every SLO key
    values = [record_values(r) for r in res.records]
    median = {k: 1000 * float(np.median([v[k] for v in values]))
              for k in ("ttft", "tpot", "e2el", "norm", "e2el_no_tool", "resume")}
    for spec in [{k: m} for k, m in median.items()] + [{"ttft": median["ttft"],
                                                       "resume": median["resume"]}]:
        rows = per_request_table(res.records, spec)
        mine = [record_meets(r, spec) for r in res.records]
        assert 0 < sum(mine) < len(mine), spec  # a threshold that splits the requests
        assert [row["meets_slo"] for row in rows] == mine
        assert summarize(res, spec)["good_requests"] == sum(mine)


# ------------------------------------------------------------------------ decision trace, Run
def test_decision_trace_lines_match_the_run(tmp_path) -> None:
    reqs = [AugRequest(f"r{i}", 0.005 * i, 40, (Segment(30, ToolCall("t", 0.05, 3)),
                                                Segment(5)))
            for i in range(8)]
    path = tmp_path / "{policy}" / "decisions.jsonl"
    eng = engine(num_gpu_blocks=20, decision_trace=str(path))
    run = eng.start(reqs, Answers(KVMode.PRESERVE))
    assert isinstance(run, Run)
    while run.advance():
        run.step()
    res = run.finish()
    lines = read_trace(tmp_path / "answers" / "decisions.jsonl")
    assert lines and all(set(x) == {"step", "t", "budget", "admitted", "preempted", "kv",
                                    "expired"} for x in lines)
    steps = [x["step"] for x in lines]
    assert steps == sorted(set(steps))  # one line per step, in order
    admitted = [rid for x in lines for rid in x["admitted"]]
    preempted = [rid for x in lines for rid in x["preempted"]]
    kv = [tuple(k) for x in lines for k in x["kv"]]
    # every admission: the first of each request, one per resume after a preemption
    assert len(admitted) == len(reqs) + len(preempted)
    assert len(preempted) == sum(r.preemptions for r in res.records) > 0
    assert sorted(kv) == sorted((r.rid, m) for r in res.records for m in r.kv_modes)
    assert all(x["budget"] == 2048 for x in lines if x["budget"] is not None)
    # the same run without a trace decides the same
    plain = engine(num_gpu_blocks=20).run(reqs, Answers(KVMode.PRESERVE))
    for a, b in zip(res.records, plain.records, strict=True):
        np.testing.assert_array_equal(a.token_s, b.token_s)


def test_decision_trace_has_one_line_per_step_that_ran(tmp_path) -> None:
    # r0 preserves 2 of the 3 blocks through a 5 s call; r1 (2 blocks) waits, and the engine
    # jumps idle to the return: that wait runs no step, so it writes no line of its own, and
    # a TTL expiry is traced
    r0 = AugRequest("r0", 0.0, 20, (Segment(3, ToolCall("t", 5.0, 1)), Segment(2)))
    r1 = AugRequest("r1", 0.05, 30, (Segment(2),))
    for ttl in (None, 0.5):
        path = tmp_path / f"{ttl}.jsonl"
        eng = engine(num_gpu_blocks=3, decision_trace=str(path))
        res = eng.run([r0, r1], Answers(KVDecision(KVMode.PRESERVE, ttl)))
        lines = read_trace(path)
        steps = [x["step"] for x in lines]
        assert steps == sorted(set(steps)), lines
        assert max(steps) <= res.stats["steps"]
        assert [rid for x in lines for rid in x["expired"]] == ([] if ttl is None else ["r0"])
        # preserved, r0 runs on after its call; its KV freed at the TTL, it is re-admitted
        want = ["r0", "r1"] if ttl is None else ["r0", "r0", "r1"]
        assert sorted(rid for x in lines for rid in x["admitted"]) == want


def test_bad_decision_trace_line_names_file_and_line(tmp_path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: not a JSON line"):
        read_trace(p)


def test_views_show_arrival_metadata_only_and_ids_name_no_script() -> None:
    from types import MappingProxyType

    from augserve.contract import VIEW_METADATA
    from augserve.sched.vllm import VLLMPolicy
    from augserve.workload import make_augmix

    meta = {"source": "api_bank", "tools": ("a",), "tools_schema_tokens": 9,
            "predicted_tool_s": 0.5, "x_tier": "gold", "tool_classes": ("web_api",),
            "trailing_call": True, "script_rid": "row-7", "filled": {}, "truncated_to": 99}
    req = AugRequest("r", 0.0, 10, (Segment(2),), metadata=MappingProxyType(meta))
    seen: list = []

    class Peek(VLLMPolicy):
        def on_enqueue(self, view, state):
            seen.append((view.rid, dict(view.metadata)))
            return super().on_enqueue(view, state)

    make_sim_engine(constant_step_s=0.01).run([req], Peek())
    assert seen[0][1] == {"source": "api_bank", "tools": ("a",), "tools_schema_tokens": 9,
                          "predicted_tool_s": 0.5, "x_tier": "gold"}
    assert set(seen[0][1]) - {"x_tier"} <= set(VIEW_METADATA)
    # a sampled workload's ids are arrival indices; the script's key stays in hidden metadata
    reqs = make_augmix(rate=5.0, duration_s=4.0).requests(0)
    assert [r.rid for r in reqs] == [str(i) for i in range(len(reqs))]
    assert all("script_rid" in r.metadata for r in reqs)
