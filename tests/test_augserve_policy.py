"""AugServe policy: value queue, starvation bound, dynamic budget direction, ordering by value.

``TrueLengthPredictor`` below is a test double (it reads lengths from a table the test builds),
not a model: it isolates the policy's mechanics from prediction error.
"""

from __future__ import annotations

import numpy as np
import pytest

from augserve.contract import EngineInfo, EngineState
from augserve.engine.factory import make_sim_engine
from augserve.predictor import Prediction
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.augserve import AugServePolicy
from augserve.sched.budget import DynamicBudget
from augserve.sched.lamps import LAMPSPolicy
from augserve.sched.ltr import LTRPolicy
from augserve.sched.predicted_sjf import PredictedSJFPolicy
from augserve.sched.value_queue import ValueQueue


class TrueLengthPredictor:
    """Test double: remaining tokens/calls from a table of true script lengths."""

    def __init__(self, reqs: list[AugRequest], tool_s: float = 1.0) -> None:
        self.out = {r.rid: r.output_tokens for r in reqs}
        self.calls = {r.rid: r.num_calls for r in reqs}
        self.tool_s = tool_s

    def predict(self, views):
        return self.predict_remaining(views)

    def predict_remaining(self, views):
        out = np.array([self.out[v.rid] - v.generated_tokens for v in views], float)
        calls = np.array([self.calls[v.rid] - v.calls_done for v in views], float)
        return Prediction(out, calls, np.full(len(views), self.tool_s), out)


class _V:
    """Minimal view for queue tests."""

    def __init__(self, rid: str) -> None:
        self.rid = rid


def test_value_queue_orders_promotes_and_skips() -> None:
    q = ValueQueue(starve_after=10.0)
    a, b, c = _V("a"), _V("b"), _V("c")
    q.push(a, key=5.0, entered=0.0)
    q.push(b, key=1.0, entered=4.0)
    q.push(c, key=3.0, entered=8.0)
    assert [v.rid for v, _ in q.ordered(now=9.0)] == ["b", "c", "a"]
    # at t=14.5 'a' (entered 0) and 'b' (entered 4) have waited >= 10: FIFO tier first
    assert [(v.rid, p) for v, p in q.ordered(now=14.5)] == [
        ("a", True), ("b", True), ("c", False)]
    # lookahead passes over a non-fitting unpromoted head, never a promoted one
    fits = {"a": False, "b": False, "c": True}
    assert [v.rid for v in q.candidates(9.0, lambda v: fits[v.rid], lookahead=1)] == ["c", "a"]
    assert [v.rid for v in q.candidates(14.5, lambda v: fits[v.rid], lookahead=5)][0] == "a"
    q.remove("b")
    assert [v.rid for v, _ in q.ordered(now=9.0)] == ["c", "a"]
    assert len(q) == 2


def test_value_queue_tier_by_key_orders_the_promoted_by_their_current_key() -> None:
    q = ValueQueue(starve_after=10.0, tier_by_key=True)
    a, b, c, d = _V("a"), _V("b"), _V("c"), _V("d")
    q.push(a, key=5.0, entered=0.0)
    q.push(b, key=1.0, entered=4.0)
    q.push(c, key=3.0, entered=8.0)
    q.push(d, key=0.5, entered=9.0)
    assert [(v.rid, p) for v, p in q.ordered(now=14.5)] == [
        ("b", True), ("a", True), ("d", False), ("c", False)]
    q.rekey(b, 9.0)  # a promoted request's new key moves it within the tier
    assert [v.rid for v, _ in q.ordered(now=14.5)] == ["a", "b", "d", "c"]
    assert [v.rid for v, _ in q.ordered(now=14.5, max_promoted=1)] == ["a", "d", "c", "b"]
    q.remove("a")
    q.push(a, key=0.1, entered=14.5)  # re-entered: waits again before it is promoted
    assert [(v.rid, p) for v, p in q.ordered(now=15.0)] == [
        ("b", True), ("a", False), ("d", False), ("c", False)]
    assert [v.rid for v, p in q.ordered(now=24.5) if p] == ["a", "d", "c", "b"]  # all, by key


def _adversarial() -> list[AugRequest]:
    # one long request among a stream of short ones that overloads a 1-slot engine:
    # shorts need 10 steps (0.1 s) and arrive every 0.05 s for 30 s
    long = AugRequest("long", 0.05, 16, (Segment(200),))
    shorts = [AugRequest(f"s{i}", 0.05 * i, 16, (Segment(10),)) for i in range(600)]
    return sorted([long, *shorts], key=lambda r: r.arrival_s)


def _ttft(policy, reqs) -> dict[str, float]:
    eng = make_sim_engine(constant_step_s=0.01, max_num_seqs=1, max_num_batched_tokens=64)
    return {r.rid: r.token_s[0] - r.arrival_s for r in eng.run(reqs, policy).records}


def test_starvation_bound_on_adversarial_stream() -> None:
    reqs = _adversarial()
    pred = TrueLengthPredictor(reqs)
    starve = 2.0
    # without a guard, shortest-first starves the long request until the stream has drained
    sjf = _ttft(PredictedSJFPolicy(pred, 64), reqs)
    assert sjf["long"] > 30.0
    # with it: promoted after 2 s; only requests that entered before it (one short, 0.1 s of
    # service) and the one running when it was promoted (<= 0.1 s) can still go first
    t = _ttft(AugServePolicy(pred, 64, starve_after_s=starve, dynamic_budget=False), reqs)
    assert t["long"] <= starve + 0.1 + 0.1 + 0.02
    # LAMPS as released promotes only requests that have run once: a new long one starves
    assert _ttft(LAMPSPolicy(pred, 64, starve_after_steps=200), reqs)["long"] > 30.0
    # LTR counts steps: 200 steps of 10 ms = 2 s
    t = _ttft(LTRPolicy(pred, 64, starve_after_steps=200), reqs)
    assert t["long"] <= starve + 0.1 + 0.1 + 0.02


def _state(free=1000, paused=0, running=10, last_step=0.02, total=10000) -> EngineState:
    info = EngineInfo(total_blocks=total, block_size=16, kv_bytes_per_token=131072,
                      max_num_batched_tokens=8192, max_num_seqs=256, max_model_len=8192,
                      prefill_s_per_token=67e-6, step_floor_s=0.01, swap_bytes_per_s=1e10)
    return EngineState(now_s=0.0, free_blocks=free, paused_blocks=paused, num_running=running,
                       num_waiting=5, num_paused=0, last_step_s=last_step, step=0,
                       running_prefill_tokens=0, waiting_prefill_tokens=0, swap_budget_blocks=10,
                       info=info)


def test_budget_moves_the_right_way() -> None:
    rule = DynamicBudget(b_min=256, b_base=2048, b_max=4096)
    roomy = _state(free=8000)
    assert rule(roomy, backlog_tokens=0) == 2048  # nothing waiting: the static base
    small, big = rule(roomy, 300), rule(roomy, 3000)
    assert small == 2048  # a small backlog does not shrink it
    assert small < big <= 4096  # a large backlog grows it (cuts TTFT)
    assert rule(roomy, 100_000) == 4096  # never above b_max
    tight = _state(free=20)  # 20 free blocks of 10000, nothing reclaimable
    assert rule(tight, 3000) == 2048 < big  # memory nearly full: no growth, the base
    reclaimable = _state(free=200, paused=5000)  # paused requests' blocks can be reclaimed
    assert 2048 < rule(reclaimable, 3000) <= 200 * 16  # grows, but only into free blocks
    slo = DynamicBudget(b_min=256, b_base=2048, b_max=4096, tpot_target_s=0.05)
    assert slo(roomy, 3000) < big  # a TPOT target caps the step's tokens
    assert slo(_state(free=8000, last_step=0.2), 3000) < slo(roomy, 3000)  # over it: cut more
    capped = DynamicBudget(b_min=256, b_base=2048, b_max=100_000)
    assert capped(roomy, 100_000) == 8192  # the engine's hard cap wins


def test_values_order_hand_made_cases() -> None:
    reqs = [AugRequest("short", 0, 100, (Segment(20),)),
            AugRequest("long", 0, 100, (Segment(500),)),
            AugRequest("short_tool", 0, 100, (Segment(10, ToolCall("x", 30.0, 10)), Segment(10))),
            AugRequest("long_prompt", 0, 4000, (Segment(20),))]
    pol = AugServePolicy(TrueLengthPredictor(reqs, tool_s=30.0), 2048)
    eng = make_sim_engine()
    pol.reset(eng.info())

    class View:
        def __init__(self, r: AugRequest) -> None:
            self.rid, self.aug_type, self.current_tool = r.rid, r.aug_type, None
            self.context_tokens, self.computed_tokens = r.prompt_tokens, 0
            self.generated_tokens, self.calls_done, self.observed_return_tokens = 0, 0, ()

    v = dict(zip([r.rid for r in reqs], pol.values([View(r) for r in reqs], _state()),
                 strict=True))
    assert v["short"] < v["long"]  # decode tokens dominate: one iteration each
    assert v["short"] < v["long_prompt"] < v["long"]  # a prefilled token costs 1/N_max
    assert v["long_prompt"] - v["short"] == pytest.approx(3900 / 2048)
    # 20 decode tokens either way, but a 30 s call adds its interception cost
    assert v["short_tool"] > v["short"]


def test_stage1_only_keeps_the_arrival_value() -> None:
    reqs = [AugRequest("a", 0, 10, (Segment(50, ToolCall("x", 0.1, 5)), Segment(50)))]
    pred = TrueLengthPredictor(reqs)
    s1 = AugServePolicy(pred, 64, stage2=False, dynamic_budget=False)
    s2 = AugServePolicy(pred, 64)
    eng = make_sim_engine(constant_step_s=0.01)
    at_leave = {}
    leave = s1.on_leave

    def record(view) -> None:
        at_leave[view.rid] = s1._arrival_value[view.rid]
        leave(view)

    s1.on_leave = record  # type: ignore[method-assign]
    for p in (s1, s2):
        eng.run(reqs, p)
    # after the call the request re-entered the queue: Stage II re-predicted 50 left, Stage I
    # still holds the arrival value (100 tokens) when the request leaves
    assert at_leave["a"] > 99
    for p in (s1, s2):  # and forgets it then: per-request tables end empty
        assert not p._arrival_value and not p.triage._keys and not p.pred_cache
    assert s1.starve_after is None and s1.lookahead == 0 and s1.age_weight == 0
    assert s2.starve_after == 15.0


def test_policies_need_a_predictor() -> None:
    for cls in (AugServePolicy, LAMPSPolicy, LTRPolicy):
        with pytest.raises(ValueError, match="needs a predictor"):
            cls(None)


def test_rekey_keeps_the_fifo_position() -> None:
    q = ValueQueue(starve_after=10.0)
    a, b = _V("a"), _V("b")
    q.push(a, key=1.0, entered=0.0)
    q.push(b, key=2.0, entered=1.0)
    q.rekey(a, 10.0)
    assert [v.rid for v, _ in q.ordered(now=5.0)] == ["b", "a"]  # by the new key
    assert [v.rid for v, _ in q.ordered(now=11.5)][0] == "a"  # still first in the FIFO tier
    assert [v.rid for v, _ in q.ordered(now=11.5, max_promoted=0)] == ["b", "a"]


class _StubView:
    """Policy-facing fields of a waiting request that has produced nothing yet."""

    def __init__(self, rid: str, arrival: float, prompt: int = 100) -> None:
        self.rid, self.arrival_s, self.aug_type, self.current_tool = rid, arrival, "x", None
        self.context_tokens, self.computed_tokens, self.prompt_tokens = prompt, 0, prompt
        self.generated_tokens, self.calls_done, self.observed_return_tokens = 0, 0, ()
        self.preempted, self.wait_since_s = False, arrival


class _TablePredictor:
    """Test double: remaining output tokens from a table."""

    def __init__(self, out: dict[str, float]) -> None:
        self.out = out

    def predict(self, views):
        return self.predict_remaining(views)

    def predict_remaining(self, views):
        o = np.array([self.out[v.rid] for v in views], float)
        return Prediction(o, np.zeros(len(views)), np.zeros(len(views)), o)


def _at(t: float) -> EngineState:
    return _state()._replace(now_s=t)


def test_requests_past_their_ttft_deadline_go_behind() -> None:
    pred = _TablePredictor({"short_late": 10, "long_ontime": 300})
    pol = AugServePolicy(pred, 2048, slo="ttft:1000", starve_after_s=None)
    pol.reset(make_sim_engine().info())
    late, ontime = _StubView("short_late", 0.0), _StubView("long_ontime", 0.8)
    pol.on_enqueue(late, _at(0.0))
    pol.on_enqueue(ontime, _at(0.8))
    assert [v.rid for v in pol.candidates(_at(0.9), lambda v: True)] == [
        "short_late", "long_ontime"]  # both can still make it: shortest first
    # at 1.2 s the short one has waited past its 1 s TTFT deadline: it can no longer meet the
    # SLO, the long one still can
    assert [v.rid for v in pol.candidates(_at(1.2), lambda v: True)] == [
        "long_ontime", "short_late"]
    no_slo = AugServePolicy(pred, 2048, starve_after_s=None)
    no_slo.reset(make_sim_engine().info())
    no_slo.on_enqueue(_StubView("short_late", 0.0), _at(0.0))
    no_slo.on_enqueue(_StubView("long_ontime", 0.8), _at(0.8))
    assert [v.rid for v in no_slo.candidates(_at(1.2), lambda v: True)][0] == "short_late"


def test_starvation_tier_gets_one_admission_per_interval() -> None:
    pred = _TablePredictor({"old1": 500, "old2": 400, "new": 1})
    pol = AugServePolicy(pred, 2048, starve_after_s=5.0, starve_every_s=1.0)
    pol.reset(make_sim_engine().info())
    o1, o2, new = _StubView("old1", 0.0), _StubView("old2", 0.1), _StubView("new", 6.0)
    for v, t in ((o1, 0.0), (o2, 0.1), (new, 6.0)):
        pol.on_enqueue(v, _at(t))
    first = list(pol.candidates(_at(6.0), lambda v: True))
    assert first[0].rid == "old1"  # a tier turn: the FIFO head first
    pol.on_admit(o1)
    # 0.5 s later: not yet the tier's turn, so value order (old2 is still promoted, but waits)
    assert [v.rid for v in pol.candidates(_at(6.5), lambda v: True)] == ["new", "old2"]
    assert [v.rid for v in pol.candidates(_at(7.0), lambda v: True)][0] == "old2"  # next turn


class _SeesReturnMeans(AugServePolicy):
    """AugServe recording the return-length estimate its value uses at every enqueue."""

    def on_enqueue(self, view, state):
        kind = view.current_tool or self._last_tool.get(view.rid) or view.aug_type
        self.seen.append((view.rid, view.calls_done, self.mean_return(kind)))
        return super().on_enqueue(view, state)


def test_return_means_are_read_under_the_key_they_are_written() -> None:
    # toolmix-like: the tool kind ("search") differs from the request type ("api_bank"); every
    # call returns 100 tokens. Requests arriving after the first return, and resumes, must see
    # 100, not the default 32 (the table used to be written by tool and read by type).
    reqs = [AugRequest(f"r{i}", 0.5 * i, 30, (Segment(4, ToolCall("search", 0.1, 100)),
                                              Segment(3)), aug_type="api_bank")
            for i in range(4)]
    pol = _SeesReturnMeans(predictor=TrueLengthPredictor(reqs))
    pol.seen = []
    res = make_sim_engine(profile="llama3_8b_a100", constant_step_s=0.01,
                          audit=True).run(reqs, pol)
    assert all(r.finished for r in res.records)
    first = [m for rid, calls, m in pol.seen if calls == 0]
    resumed = [m for rid, calls, m in pol.seen if calls == 1]
    assert first[0] == 32.0 and all(m == 100.0 for m in first[1:])  # r0 came before any return
    assert resumed and all(m == 100.0 for m in resumed)
    assert pol.mean_return("search") == pol.mean_return("api_bank") == 100.0
    assert not pol._last_tool  # forgotten when the requests left
