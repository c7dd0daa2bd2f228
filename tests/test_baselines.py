"""The baselines as their authors run them: hand-computed cases from their papers or released
code (Continuum's TTL rules and pin reclaim, LAMPS's and LTR's starvation rules, the SLO-aware
FCFS / EDF / hand-rule orders, InferCept's derived budget) and the tuned-settings resolver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_augserve_policy import _at

from augserve.contract import EngineState, KVDecision, KVMode, RequestView
from augserve.engine.cost import load_profile, saturation_tokens
from augserve.engine.factory import make_sim_engine
from augserve.predictor import Prediction
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.continuum import ContinuumPolicy, best_ttl
from augserve.sched.edf import EDFPolicy
from augserve.sched.fcfs_slo import FCFSSLOPolicy
from augserve.sched.hand_rule import HandRulePolicy
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.lamps import LAMPSPolicy
from augserve.sched.ltr import LTRPolicy
from augserve.tuned import load_tuned, tuned_value

ROOT = Path(__file__).resolve().parents[1]
SLO = "ttft:1000"


class _V:
    """A request as a policy sees it (only the fields these policies read)."""

    def __init__(self, rid: str, arrival: float, **kw) -> None:
        self.rid, self.arrival_s, self.aug_type, self.current_tool = rid, arrival, "x", None
        self.prompt_tokens = self.context_tokens = kw.pop("context", 100)
        self.computed_tokens = 0
        self.generated_tokens, self.calls_done, self.observed_return_tokens = 0, 0, ()
        self.preempted, self.wait_since_s, self.submit_s = False, arrival, arrival
        self.session_id = rid
        for k, v in kw.items():
            setattr(self, k, v)


def _info():
    return make_sim_engine().info()


def _order(pol, t: float) -> list[str]:
    return [v.rid for v in pol.candidates(_at(t), lambda v: True)]


# ------------------------------------------------------------------ InferCept's budget
def test_infercept_budget_is_the_saturation_of_the_step_time_curve() -> None:
    # GPT-J-6B: a consistency check only. The profile's floor is InferCept's own f_s = a*384 + c
    # (exps/6B_bench.sh), so the derivation must give back its mlimit = 384; it cannot confirm it
    assert saturation_tokens(load_profile("gptj_6b_a100")) == 384
    # Llama-3-8B: floor and slope come from separate Vidur measurements (the 8-token step,
    # 9.98 ms; the fit over 256-4096 tokens, a = 5.86 ms, b = 67 us): (9.98 - 5.86) / 0.067 = 61.5
    assert saturation_tokens(load_profile("llama3_8b_a100")) == 61
    # a curve without a memory-bound floor has no saturation point: vLLM's default
    assert saturation_tokens(load_profile("cpu_tiny_llama")) == 2048


def test_the_saturation_point_moves_with_the_curve() -> None:
    import dataclasses

    p = load_profile("llama3_8b_a100")
    for floor_ms, want in ((9.98, 61), (12.0, 91), (5.93, 1)):  # (T_floor - a) / b, floored
        q = dataclasses.replace(p, t_floor_s=floor_ms / 1e3)
        assert saturation_tokens(q) == want, floor_ms


def test_the_infercept_row_reads_the_derived_budget() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", ["policy=[infercept,infercept_vllm_budget]",
                                "engine.profile=gptj_6b_a100"])
    assert cfg.policies.infercept.max_num_batched_tokens == 384
    assert cfg.policies.infercept_vllm_budget.max_num_batched_tokens == 2048


# ------------------------------------------------------------------ Continuum
def _call(rid: str, tool: str = "calc", context: int = 1000) -> _V:
    return _V(rid, 0.0, current_tool=tool, context=context, calls_done=1, generated_tokens=5)


def test_continuum_fixed_ttl_pins_2s_unless_the_tool_mean_exceeds_2s() -> None:
    pol = ContinuumPolicy("fixed")
    pol.reset(_info())
    state = _at(0.0)
    # cold start: no history, the mean counts as 0: pin for exactly 2.0 s
    assert pol.on_intercept(_call("a"), state) == KVDecision(KVMode.PRESERVE, 2.0)
    pol.on_tool_return(_call("a"), 1.0)
    pol.on_tool_return(_call("b"), 2.9)  # mean 1.95 <= 2.0: still pins, for 2.0 s exactly
    assert pol.on_intercept(_call("c"), state) == KVDecision(KVMode.PRESERVE, 2.0)
    pol.on_tool_return(_call("d"), 2.3)  # mean 2.067 > 2.0: no pin, the KV goes as vLLM's
    assert pol.on_intercept(_call("e"), state) is KVMode.VLLM
    assert pol.on_intercept(_call("f", tool="other"), state) == KVDecision(KVMode.PRESERVE, 2.0)


def test_best_ttl_maximises_cdf_times_benefit_minus_tau() -> None:
    # samples 0.5, 1, 3; base 2 s: r(0)=0, r(0.5)=1/3*2-0.5=0.167, r(1)=2/3*2-1=0.333,
    # r(3)=2-3<0 -> tau = 1.0
    assert best_ttl([0.5, 1.0, 3.0], 2.0) == 1.0
    assert best_ttl([0.5, 1.0, 3.0], 0.6) == 0.0  # r(0.5)=-0.3, r(1)=-0.6: no pin
    assert best_ttl([1.0, 1.0, 2.0], 3.0) == 1.0  # r(1)=2/3*3-1=1.0 = r(2)=3-2=1.0: smallest
    assert best_ttl([], 5.0) == 0.0


def test_continuum_dynamic_ttl_cold_start_then_the_cdf() -> None:
    pol = ContinuumPolicy("dynamic", record_threshold=3)
    pol.reset(_info())
    state = _at(0.0)
    for d in (0.5, 1.0, 3.0):
        pol.on_tool_return(_call("a", tool="t"), d)
    # at most K records in all: the fixed 2.0 s, whatever the tool
    assert pol.on_intercept(_call("b", tool="t"), state) == KVDecision(KVMode.PRESERVE, 2.0)
    pol.on_tool_return(_call("a", tool="u"), 0.5)  # 4 > K records (pooled: tool t has only 3)
    # T = 0 (no preemption waited), eta = 1 (no finished program), reload 0.0002 s/token:
    # context 10000 -> base 2.0 s; pooled samples 0.5, 0.5, 1, 3: r(0.5)=0.5, r(1)=0.5, r(3)=-1
    assert pol.on_intercept(_call("c", tool="t", context=10000), state) == KVDecision(
        KVMode.PRESERVE, 0.5)
    # a small context: base 0.2 s < any sample's cost: no pin
    assert pol.on_intercept(_call("d", tool="t", context=1000), state) is KVMode.VLLM


def test_continuum_dynamic_ttl_uses_the_measured_queue_delay_and_eta() -> None:
    pol = ContinuumPolicy("dynamic", record_threshold=0)
    pol.reset(_info())
    for d in (0.5, 1.5):
        pol.on_tool_return(_call("a", tool="t"), d)
    assert pol.on_intercept(_call("b", tool="t", context=0), _at(0.0)) is KVMode.VLLM  # T = 0
    # a preempted request waits from 1.0 s to its re-admission at 4.0 s: T = 3.0 s
    p = _V("p", 0.0, preempted=True, wait_since_s=1.0)
    pol.on_enqueue(p, _at(1.0))
    list(pol.candidates(_at(4.0), lambda v: True))
    pol.on_admit(p)
    assert pol.queue_delay_s() == 3.0
    # finished programs of 3 turns and of 1: (turn, turns left) = (0,2) (1,1) (2,0) (0,0),
    # corr = -1.25 / 2.75, eta = 0.4545; base = T * eta = 1.364 s (context 0: no reload)
    pol.on_leave(_V("x", 0.0, calls_done=2))
    pol.on_leave(_V("y", 0.0, calls_done=0))
    assert pol.eta() == pytest.approx(1.25 / 2.75)
    # r(0.5) = 0.5 * 1.364 - 0.5 = 0.18 > 0 > r(1.5) = 1.364 - 1.5; with eta = 1 (base 3 s)
    # it would be 1.5 s
    assert pol.on_intercept(_call("c", tool="t", context=0), _at(5.0)) == KVDecision(
        KVMode.PRESERVE, 0.5)


def test_continuum_orders_by_program_first_arrival() -> None:
    pol = ContinuumPolicy()
    pol.reset(_info())
    a1 = _V("a1", 0.0, session_id="A")
    b1 = _V("b1", 1.0, session_id="B")
    a2 = _V("a2", 2.0, session_id="A")  # a later request of program A
    for v in (a1, b1, a2):
        pol.on_enqueue(v, _at(v.arrival_s))
    pol.on_admit(a1)
    assert _order(pol, 2.0) == ["a2", "b1"]  # A arrived first: its turns keep that time
    pol.on_leave(a1)
    pol.on_admit(a2)
    pol.on_leave(a2)  # every request of A has left; the released queue still remembers A
    a3 = _V("a3", 3.0, session_id="A")
    pol.on_enqueue(a3, _at(3.0))
    assert _order(pol, 3.0) == ["a3", "b1"]


def test_continuum_forgets_the_earliest_program_past_its_memory(monkeypatch) -> None:
    import augserve.sched.continuum as mod

    monkeypatch.setattr(mod, "PROGRAM_MEMORY", 2)
    pol = ContinuumPolicy()
    pol.reset(_info())
    # A, B, then A again (seen lately), then C: C's arrival forgets B, the least recently seen
    for v in (_V("a1", 0.0, session_id="A"), _V("b1", 1.0, session_id="B"),
              _V("a2", 1.5, session_id="A"), _V("c1", 2.0, session_id="C")):
        pol.on_enqueue(v, _at(v.arrival_s))
        pol.on_admit(v)
        pol.on_leave(v)
    assert list(pol._program_arrival) == ["A", "C"]
    for v in (_V("a3", 3.6, session_id="A"), _V("b2", 3.0, session_id="B")):
        pol.on_enqueue(v, _at(3.6))
    assert _order(pol, 3.6) == ["a3", "b2"]  # A kept 0.0; B starts over at its 3.0


class _Answers(KeyedPolicy):
    """FCFS answering each request's calls with its own decision."""

    name = "answers"

    def __init__(self, decisions: dict[str, KVMode | KVDecision]) -> None:
        self.decisions = decisions

    def token_budget(self, state: EngineState) -> int:
        return 2048

    def on_intercept(self, view: RequestView, state: EngineState):
        return self.decisions[view.rid]


def _pressure_run(d0, d1):
    # r0, r1 pin 2 blocks each across 20 s calls; r2 then grows to 4 blocks of the 6: one pin
    # must go before r2 can decode on
    reqs = [AugRequest("r0", 0.0, 20, (Segment(3, ToolCall("t", 20.0, 1)), Segment(2))),
            AugRequest("r1", 0.001, 20, (Segment(3, ToolCall("t", 20.0, 1)), Segment(2))),
            AugRequest("r2", 0.1, 16, (Segment(40),))]
    eng = make_sim_engine(constant_step_s=0.01, num_gpu_blocks=6, audit=True)
    return eng.run(reqs, _Answers({"r0": d0, "r1": d1}))


def test_memory_pressure_frees_the_pin_with_the_latest_end_first() -> None:
    # pin ends: r0 at ~0.03 + 30 s, r1 at ~0.03 + 25 s: r0's goes, r1's stays; no preemption
    res = _pressure_run(KVDecision(KVMode.PRESERVE, 30.0), KVDecision(KVMode.PRESERVE, 25.0))
    r0, r1, r2 = res.records
    assert res.stats["pins_reclaimed"] == 1 and res.stats["preemptions"] == 0
    assert (r0.kv_reclaimed, r1.kv_reclaimed) == (1, 0)
    assert r0.kv_expired == r1.kv_expired == 0  # freed before their TTL, not at it
    assert r0.recomputed_tokens > 0 and r1.recomputed_tokens == 0  # r0 resumes as discarded
    assert r2.finished and r2.token_s[-1] < 1.0
    # the other way round, the other pin goes
    res = _pressure_run(KVDecision(KVMode.PRESERVE, 25.0), KVDecision(KVMode.PRESERVE, 30.0))
    assert (res.records[0].kv_reclaimed, res.records[1].kv_reclaimed) == (0, 1)


def test_a_pin_shorter_than_its_call_is_reclaimed_before_a_plain_preserve() -> None:
    # r0 pins for 5 s across its 20 s call, r1 preserves without a TTL: only r0's pin may go
    res = _pressure_run(KVDecision(KVMode.PRESERVE, 5.0), KVMode.PRESERVE)
    r0, r1, _ = res.records
    assert res.stats["pins_reclaimed"] == 1 and res.stats["preemptions"] == 0
    assert (r0.kv_reclaimed, r1.kv_reclaimed) == (1, 0)
    assert r0.recomputed_tokens > 0 and r1.recomputed_tokens == 0


def test_a_pin_shorter_than_its_call_expires_at_its_ttl_without_pressure() -> None:
    reqs = [AugRequest("r0", 0.0, 20, (Segment(3, ToolCall("t", 20.0, 1)), Segment(2)))]
    eng = make_sim_engine(constant_step_s=0.01, num_gpu_blocks=100, audit=True)
    res = eng.run(reqs, _Answers({"r0": KVDecision(KVMode.PRESERVE, 5.0)}))
    r0 = res.records[0]
    assert res.stats["pins_reclaimed"] == 0
    assert (r0.kv_expired, r0.kv_reclaimed) == (1, 0)
    # freed as vLLM frees: the prefix cache keeps its full block, only the partial one is redone
    assert r0.finished and r0.prefix_hit_tokens == 16 and 0 < r0.recomputed_tokens < 16



def test_a_preserve_without_ttl_is_not_reclaimed() -> None:
    # InferCept's preserve holds until the tool returns: r2 waits for the returns (20 s)
    res = _pressure_run(KVMode.PRESERVE, KVMode.PRESERVE)
    assert res.stats["pins_reclaimed"] == 0
    assert res.records[2].token_s[-1] > 20.0


# ------------------------------------------------------------------ LAMPS and LTR
class _Pred:
    """Arrival rank and remaining length from separate tables (they must not be confused)."""

    def __init__(self, rank: dict[str, float], remaining: dict[str, float]) -> None:
        self.rank, self.remaining = rank, remaining

    def _p(self, views, table):
        o = np.array([table[v.rid] for v in views], float)
        z = np.zeros(len(views))
        return Prediction(o, z, z, o)

    def predict(self, views):
        return self._p(views, self.rank)

    def predict_remaining(self, views):
        return self._p(views, self.remaining)


def _steps(step: int) -> EngineState:
    return _at(0.0)._replace(step=step)


def test_ltr_ranks_by_the_arrival_ranking_model() -> None:
    pol = LTRPolicy(_Pred({"a": 1.0, "b": 2.0}, {"a": 500.0, "b": 5.0}))
    pol.reset(_info())
    for rid in "ab":
        pol.on_enqueue(_V(rid, 0.0), _steps(0))
    assert [v.rid for v in pol.candidates(_steps(1), lambda v: True)] == ["a", "b"]


def test_ltr_promotes_after_200_unscheduled_steps() -> None:
    pol = LTRPolicy(_Pred({"long": 9.0, "s0": 1.0, "s1": 1.0}, {}))
    pol.reset(_info())
    pol.on_enqueue(_V("long", 0.0), _steps(0))
    pol.on_enqueue(_V("s0", 0.0), _steps(150))
    pol.on_enqueue(_V("s1", 0.0), _steps(150))
    first = lambda s: next(iter(pol.candidates(_steps(s), lambda v: True))).rid  # noqa: E731
    assert first(199) == "s0"  # 199 steps unscheduled: still ranked
    assert first(200) == "long"  # 200: promoted ahead of the ranking


def test_ltr_promotion_ends_once_the_request_has_run() -> None:
    # vllm-ltr: at promotion idle = 0 and runs = period; once it has run, pri goes back to 0.
    # Here a promoted request runs to its call, and its next segment is ranked afresh
    pol = LTRPolicy(_Pred({"long": 9.0, "short": 1.0}, {}))
    pol.reset(_info())
    order = lambda s: [v.rid for v in pol.candidates(_steps(s), lambda v: True)]  # noqa: E731
    long = _V("long", 0.0)
    pol.on_enqueue(long, _steps(0))
    pol.on_enqueue(_V("short", 0.0), _steps(200))
    assert order(200) == ["long", "short"]  # promoted
    pol.on_admit(long)
    pol.on_enqueue(_V("long", 0.0, calls_done=1, generated_tokens=5), _steps(300))  # its call
    assert order(300) == ["short", "long"]  # demoted: ranked by its score again
    assert order(499) == ["short", "long"]  # "short" (entered 200) promoted at 400...
    pol.on_admit(_V("short", 0.0))
    assert order(500) == ["long"]  # ...and "long" again 200 steps after re-entering


def test_ltr_orders_its_promoted_requests_by_score_not_by_wait() -> None:
    # vllm-ltr sorts by (pri, -aux_model_score): the promoted tier keeps the ranking
    pol = LTRPolicy(_Pred({"old_long": 9.0, "young_short": 1.0, "new": 0.5}, {}))
    pol.reset(_info())
    pol.on_enqueue(_V("old_long", 0.0), _steps(0))
    pol.on_enqueue(_V("young_short", 0.0), _steps(50))
    pol.on_enqueue(_V("new", 0.0), _steps(240))
    order = lambda s: [v.rid for v in pol.candidates(_steps(s), lambda v: True)]  # noqa: E731
    assert order(249) == ["old_long", "new", "young_short"]  # only old_long promoted
    assert order(250) == ["young_short", "old_long", "new"]  # both: by score, not by age
    pol.on_admit(_V("young_short", 0.0))
    assert order(251) == ["old_long", "new"]


def test_lamps_promotes_only_requests_that_have_run() -> None:
    pred = _Pred({}, {"new": 900.0, "resumed": 800.0, "short": 1.0})
    pol = LAMPSPolicy(pred)
    pol.reset(_info())
    pol.on_enqueue(_V("new", 0.0), _steps(0))
    pol.on_enqueue(_V("resumed", 0.0, calls_done=1, generated_tokens=4), _steps(0))
    pol.on_enqueue(_V("short", 0.0), _steps(50))
    order = lambda s: [v.rid for v in pol.candidates(_steps(s), lambda v: True)]  # noqa: E731
    assert order(100) == ["short", "resumed", "new"]  # by memory x time; 100 is not > 100
    assert order(101) == ["resumed", "short", "new"]  # 101 > 100 iterations: resumed first


# ------------------------------------------------------------------ SLO-aware baselines
def test_fcfs_slo_orders_like_vllm_or_infercept_and_triages_late_first_tokens() -> None:
    for order, expect in (("submit", ["early", "resumed"]), ("arrival", ["resumed", "early"])):
        pol = FCFSSLOPolicy(order=order, slo=SLO, starve_after_s=None)
        pol.reset(_info())
        # arrived at 0, resumed at 0.5 after a call; a new request at 0.4
        resumed = _V("resumed", 0.0, submit_s=0.5, generated_tokens=3, calls_done=1)
        pol.on_enqueue(resumed, _at(0.5))
        pol.on_enqueue(_V("early", 0.4), _at(0.5))
        assert _order(pol, 0.6) == expect, order
        # at 1.5 s "early" (no first token since 0.4) has missed its 1 s deadline: behind
        assert _order(pol, 1.5) == ["resumed", "early"], order
    pol = FCFSSLOPolicy(slo=SLO)
    pol.reset(_info())
    pol.on_enqueue(_V("a", 0.0), _at(0.0))
    pol.on_enqueue(_V("p", 0.1, preempted=True, wait_since_s=0.2), _at(0.2))
    assert _order(pol, 0.3) == ["p", "a"]  # preempted first, as V1's prepend
    # past their deadlines preempted requests without a first token go behind the on-time
    # ones too, still ahead of the other late ones (most recently preempted first)
    pol.on_enqueue(_V("late", 0.0, preempted=True, wait_since_s=1.2), _at(1.2))
    pol.on_enqueue(_V("fresh", 1.1), _at(1.2))
    assert _order(pol, 1.3) == ["fresh", "late", "p", "a"]
    with pytest.raises(ValueError, match="needs an SLO with a ttft"):
        FCFSSLOPolicy(slo=None)
    with pytest.raises(ValueError, match="late_penalty=1e.06 s must exceed 1e.08 s"):
        FCFSSLOPolicy(slo=SLO, late_penalty=1e6)  # AugServe's 1e6 would not clear preempted


def test_edf_orders_by_ttft_or_turn_deadline() -> None:
    pol = EDFPolicy(slo="ttft:1000 resume:200", starve_after_s=None)
    pol.reset(_info())
    pol.on_enqueue(_V("new", 0.5), _at(0.9))  # deadline 1.5
    pol.on_enqueue(_V("turn", 0.0, submit_s=0.9, generated_tokens=2), _at(0.9))  # 0.9 + 0.2
    pol.on_enqueue(_V("newer", 0.6), _at(0.9))  # 1.6
    assert _order(pol, 0.95) == ["turn", "new", "newer"]
    assert _order(pol, 1.55) == ["turn", "newer", "new"]  # "new" is late: behind


def test_hand_rule_on_time_first_tokens_first_then_cheapest_prefill() -> None:
    pol = HandRulePolicy(slo=SLO, starve_after_s=None)
    pol.reset(_info())
    pol.on_enqueue(_V("big", 0.5, context=3000), _at(0.5))
    pol.on_enqueue(_V("small", 0.6, context=200), _at(0.6))
    pol.on_enqueue(_V("turn", 0.0, context=50, computed_tokens=40, generated_tokens=9), _at(0.6))
    pol.on_enqueue(_V("old", 0.0, context=10), _at(0.6))  # missed its deadline at 1.0
    assert _order(pol, 0.7) == ["old", "small", "big", "turn"]
    assert _order(pol, 1.2) == ["small", "big", "turn", "old"]


# ------------------------------------------------------------------ tuned settings
def test_tuned_values_are_read_per_profile_with_the_default_elsewhere(tmp_path) -> None:
    (tmp_path / "p1.yaml").write_text(
        "policies:\n  vllm:\n    tuned: {max_num_batched_tokens: 512}\n")
    load_tuned.cache_clear()
    assert load_tuned("p1", str(tmp_path)) == {"vllm": {"max_num_batched_tokens": 512}}
    assert load_tuned("nope", str(tmp_path)) == {}
    assert tuned_value("not_a_profile", "vllm", "max_num_batched_tokens", 7) == 7
    (tmp_path / "bad.yaml").write_text("policies:\n  vllm: {tuned: 3}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: policies.vllm.tuned must be a mapping"):
        load_tuned("bad", str(tmp_path))


def test_the_committed_tuning_is_what_the_configs_read() -> None:
    from hydra import compose, initialize_config_dir

    tuned = load_tuned("llama3_8b_a100")
    assert tuned, "data/tuned/llama3_8b_a100.yaml is missing (python experiments/tune.py)"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", ["policy=[vllm,vllm_tuned,augserve]", "predictor=lgbm"])
    assert cfg.policies.vllm.max_num_batched_tokens == 2048  # V1's default, never tuned
    assert (cfg.policies.vllm_tuned.max_num_batched_tokens
            == tuned["vllm"]["max_num_batched_tokens"])
    for k in ("late_penalty", "starve_after_s", "starve_every_s", "lookahead"):
        assert cfg.policies.augserve[k] == tuned["augserve"][k], k
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", ["policy=[vllm_slo,infercept_slo,edf,hand_rule]"])
    for p in ("vllm_slo", "infercept_slo", "edf", "hand_rule"):  # AugServe's tier, as tuned
        for k in ("starve_after_s", "starve_every_s"):
            assert cfg.policies[p][k] == tuned["augserve"][k], (p, k)


def test_vllm_without_prefix_caching_runs_on_its_own_engine(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "serve.py", "policy=[vllm,vllm_nocache]", "workload.rate=4",
         "workload.duration_s=20", "progress=false", "plots=false",
         f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import csv

    hit = {p: sum(int(r["prefix_hit_tokens"]) for r in csv.DictReader(
        open(tmp_path / p / "requests.csv"))) for p in ("vllm", "vllm_nocache")}
    assert hit["vllm"] > 0 and hit["vllm_nocache"] == 0
    md = (tmp_path / "comparison.md").read_text()
    assert "`vllm_nocache`: vLLM without prefix caching (as InferCept measured)" in md


def test_infercept_kv_choice_reads_the_mean_it_stored_for_a_call_without_a_tool_name() -> None:
    from augserve.sched.kv_choice import MeanToolMinWaste

    m = MeanToolMinWaste(default_tool_s=0.0)
    v = _V("a", 0.0, context=2000)  # current_tool None: the call's kind is its aug_type
    assert m.choose(v, _at(0.0)) is KVMode.PRESERVE  # a 0 s call: keeping the KV costs nothing
    m.observe(v, 1000.0)
    assert m.estimate("x") == 1000.0
    assert m.choose(v, _at(0.0)) is not KVMode.PRESERVE  # a 1000 s mean: not held in GPU
