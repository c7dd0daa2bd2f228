"""Autellix PLAS (augserve/sched/autellix.py): hand-computed cases from MARS_preview's rules.

Views are driven by hand through a stub with the fields the policy reads, with the clock
passed in ``EngineState.now_s``; the end-to-end cases use the SimEngine.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from augserve.contract import EngineState, KVMode
from augserve.engine.factory import make_sim_engine
from augserve.metrics import per_request_table
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.autellix import AutellixPolicy
from augserve.sched.vllm import VLLMPolicy
from augserve.serving import prepare_requests
from augserve.tuned import tuned_value
from augserve.workload import make_augmix

ROOT = Path(__file__).resolve().parents[1]
INFO = make_sim_engine().info()
STATE = EngineState(now_s=0.0, free_blocks=1000, paused_blocks=0, num_running=0, num_waiting=0,
                    num_paused=0, last_step_s=0.01, step=0, running_prefill_tokens=0,
                    waiting_prefill_tokens=0, swap_budget_blocks=10, info=INFO)


class _View:
    """The policy-facing fields of a request, set by the test as an engine would."""

    def __init__(self, rid: str, session: str | None = None) -> None:
        self.rid = rid
        self.session_id = session if session is not None else rid
        self.arrival_s = self.submit_s = self.wait_since_s = 0.0
        self.preempted = False
        self.context_tokens = 100
        self.computed_tokens = 0


def _at(t: float) -> EngineState:
    return STATE._replace(now_s=t)


def _policy(**kw) -> AutellixPolicy:
    pol = AutellixPolicy(**kw)
    pol.reset(INFO)
    return pol


def _enqueue(pol: AutellixPolicy, v: _View, t: float, preempted: bool = False,
             context: int | None = None) -> None:
    v.wait_since_s, v.preempted = t, preempted
    if not preempted:
        v.submit_s = t
    if context is not None:
        v.context_tokens = context
    pol.on_enqueue(v, _at(t))


def _admit(pol: AutellixPolicy, v: _View, t: float, computed: int = 0) -> None:
    list(pol.candidates(_at(t), lambda _: True))  # the engine's clock, as at an admission
    v.computed_tokens = computed
    v.preempted = False
    pol.on_admit(v)


def _call(pol: AutellixPolicy, v: _View, t: float, context: int) -> None:
    """``v``'s call ends at ``t`` with ``context`` tokens (its tool call)."""
    v.context_tokens = context
    assert pol.on_intercept(v, _at(t)) is KVMode.VLLM


def _order(pol: AutellixPolicy, t: float) -> list[str]:
    return [v.rid for v in pol.candidates(_at(t), lambda _: True)]


# -- (a) levels ------------------------------------------------------------------------------
@pytest.mark.parametrize(("service", "level"), [
    (0, 0), (2047, 0), (2048, 1), (8191, 1), (8192, 2), (32767, 2), (32768, 3), (10**9, 3)])
def test_level_for_service_at_the_thresholds(service: int, level: int) -> None:
    assert _policy().level_for_service(service) == level


@pytest.mark.parametrize(("cached", "level"), [(513, 0), (512, 1)])
def test_a_calls_service_is_what_it_computed_not_what_was_cached(cached: int, level: int) -> None:
    """Context 2560 at the call's end; ``cached`` tokens were on the GPU at admission:
    2560 - 513 = 2047 -> level 0, 2560 - 512 = 2048 -> level 1 for the program's next call."""
    pol = _policy()
    v = _View("r", "P")
    _enqueue(pol, v, 0.0, context=2000)
    _admit(pol, v, 0.0, computed=cached)
    _call(pol, v, 1.0, 2560)
    assert pol.service_of("P") == 2560 - cached
    _enqueue(pol, v, 2.0, context=2570)
    assert pol.level_of("r") == level


def test_service_sums_over_the_programs_calls_and_requests() -> None:
    """Two calls of 1500 tokens (one per request of session P): 3000 >= 2048 -> level 1."""
    pol = _policy()
    a, b = _View("a", "P"), _View("b", "P")
    _enqueue(pol, a, 0.0, context=1500)
    _admit(pol, a, 0.0)
    _call(pol, a, 1.0, 1500)
    _enqueue(pol, b, 1.0, context=1500)
    assert pol.level_of("b") == 0
    _admit(pol, b, 1.0)
    _call(pol, b, 2.0, 1500)
    assert pol.service_of("P") == 3000
    _enqueue(pol, a, 3.0, context=1510)
    assert pol.level_of("a") == 1


def test_preempted_work_counts_again_and_keeps_the_level() -> None:
    """1000 tokens before a preemption, 1100 after (recompute): 2100 >= 2048, though either
    part alone would stay below the first threshold."""
    pol = _policy()
    v = _View("r", "P")
    _enqueue(pol, v, 0.0, context=1000)
    _admit(pol, v, 0.0)
    _enqueue(pol, v, 0.5, preempted=True, context=1000)  # its KV is gone: computed reads 0
    assert pol.level_of("r") == 0 and pol.service_of("P") == 0  # folded only at the call's end
    _admit(pol, v, 0.6)
    _call(pol, v, 1.0, 1100)
    assert pol.service_of("P") == 2100
    _enqueue(pol, v, 2.0, context=1110)
    assert pol.level_of("r") == 1


def test_program_state_lives_until_its_last_request_leaves() -> None:
    pol = _policy()
    a, b = _View("a", "P"), _View("b", "P")
    _enqueue(pol, a, 0.0, context=3000)
    _enqueue(pol, b, 0.0, context=10)
    _admit(pol, a, 0.0)
    _call(pol, a, 1.0, 3000)
    pol.on_leave(a)
    assert pol.service_of("P") == 3000  # b is still in the engine
    pol.on_admit(b)
    b.context_tokens = 20
    pol.on_leave(b)  # the program's last request: its entry is dropped
    assert pol.service_of("P") == 0 and not pol._programs and not pol._calls
    _enqueue(pol, _View("c", "P"), 5.0)  # a later request of the same session starts afresh
    assert pol.level_of("c") == 0


# -- (b) queue demotion: a program's later call waits behind a new program's first ----------
def _demotion_reqs() -> list[AugRequest]:
    # A's first call computes 3000 + 5 tokens (> 2048: its second call enters level 1); its
    # tool returns at ~0.56 s while 'blocker' holds the only sequence slot until ~2.1 s; B
    # (a new program, level 0) arrives at 0.57 s, before A's promotion time 0.56 + 2 * 0.06
    return [
        AugRequest("A", 0.0, 3000, (Segment(5, ToolCall("t", 0.5, 10)), Segment(5)),
                   session_id="A"),
        AugRequest("blocker", 0.07, 16, (Segment(200),)),
        AugRequest("B", 0.57, 16, (Segment(5),), session_id="B"),
    ]


def test_a_new_program_goes_before_a_program_with_attained_service() -> None:
    eng = make_sim_engine(constant_step_s=0.01, max_num_seqs=1, max_num_batched_tokens=2048,
                          audit=True)
    reqs = _demotion_reqs()
    rec = {r.rid: r for r in eng.run(reqs, AutellixPolicy()).records}
    assert all(r.finished for r in rec.values())
    a_second_call = rec["A"].seg_first_s[1]
    assert rec["B"].token_s[0] < a_second_call  # PLAS: B first
    assert rec["blocker"].token_s[-1] < rec["B"].token_s[0]
    # FCFS by submission (vLLM) serves A's continuation (submitted 0.56 s) before B (0.57 s)
    rec = {r.rid: r for r in eng.run(reqs, VLLMPolicy(2048)).records}
    assert rec["A"].seg_first_s[1] < rec["B"].token_s[0]


# -- (c) anti-starvation -------------------------------------------------------------------
def _starving(beta: float = 2.0) -> AutellixPolicy:
    """P's first call waited 0.5 s and ran 1.0 s (3000 tokens: level 1); its second call
    enters at 2.0 s. X (also level 1, ran 1.9 s) entered at 1.9 s, ahead of it."""
    pol = _policy(beta=beta)
    p, x = _View("p", "P"), _View("x", "X")
    _enqueue(pol, p, 0.0, context=3000)
    _enqueue(pol, x, 0.0, context=3000)
    _admit(pol, x, 0.0)
    _admit(pol, p, 0.5)
    _call(pol, p, 1.5, 3000)
    _call(pol, x, 1.9, 3000)
    _enqueue(pol, x, 1.9, context=3010)
    _enqueue(pol, p, 2.0, context=3010)
    assert pol.level_of("p") == pol.level_of("x") == 1
    return pol


def test_promotion_when_program_wait_reaches_beta_times_its_service() -> None:
    """(W_p + W_c) / S_p >= 2 with W_p = 0.5 s, S_p = 1.0 s: W_c >= 1.5 s, i.e. at 3.5 s.
    (X's is at 1.9 + 2 * 1.9 = 5.7 s.)"""
    pol = _starving()
    assert _order(pol, 3.0) == ["x", "p"]
    assert _order(pol, 3.5 - 1e-9) == ["x", "p"]
    assert _order(pol, 3.5) == ["p", "x"]  # level 0 now
    assert pol.level_of("p") == 0 and pol.level_of("x") == 1
    # promoted to the tail of level 0 as of 3.5 s: behind a new program that entered at 3.4 s
    # (and which the test enqueues late, as an engine at 3.6 s would)
    _enqueue(pol, _View("new"), 3.4)
    assert _order(pol, 3.6) == ["new", "p", "x"]
    _enqueue(pol, _View("late"), 3.7)
    assert _order(pol, 3.8) == ["new", "p", "late", "x"]


def test_a_promotion_seen_late_takes_its_due_time_as_entry() -> None:
    """The engine next asks at 4.0 s; P became due at 3.5 s, so it goes before a new program
    that entered at 3.8 s (as if re-queued when the ratio reached beta)."""
    pol = _starving()
    _enqueue(pol, _View("new"), 3.8)
    assert _order(pol, 4.0) == ["p", "new", "x"]


def test_no_promotion_without_service_time_or_with_beta_off() -> None:
    pol = _starving(beta=math.inf)
    assert _order(pol, 1e6) == ["x", "p"]
    pol = _policy()
    q = _View("q", "Q")
    _enqueue(pol, q, 0.0, context=3000)
    _admit(pol, q, 1.0)
    _call(pol, q, 1.0, 3000)  # 3000 tokens in no measured time: S_p = 0, the ratio is undefined
    _enqueue(pol, q, 1.0)
    _enqueue(pol, _View("z"), 2.0)
    assert pol.level_of("q") == 1
    assert _order(pol, 1e6) == ["z", "q"] and pol.level_of("q") == 1


# -- (d) order within a level ------------------------------------------------------------
def test_fifo_within_a_level_and_preempted_first() -> None:
    pol = _policy()
    a, b, c = _View("a"), _View("b"), _View("c")
    _enqueue(pol, b, 1.0)
    _enqueue(pol, a, 0.0)  # (entered earlier, seen later)
    _enqueue(pol, c, 2.0)
    assert _order(pol, 2.0) == ["a", "b", "c"]
    _admit(pol, a, 3.0)
    _admit(pol, b, 3.0)
    _enqueue(pol, a, 5.0, preempted=True)
    _enqueue(pol, b, 6.0, preempted=True)
    # prepended (MARS's appendleft): the most recently preempted first, both ahead of c
    assert _order(pol, 6.0) == ["b", "a", "c"]
    # a preempted call of a higher level still waits behind level 0
    pol = _policy()
    hi, lo = _View("hi", "H"), _View("lo")
    _enqueue(pol, hi, 0.0, context=3000)
    _admit(pol, hi, 0.0)
    _call(pol, hi, 1.0, 3000)
    _enqueue(pol, hi, 1.0)
    _admit(pol, hi, 1.0)
    _enqueue(pol, hi, 1.5, preempted=True)
    _enqueue(pol, lo, 1.6)
    assert pol.level_of("hi") == 1 and _order(pol, 1.6) == ["lo", "hi"]


def test_constructor_validation() -> None:
    for kw, msg in [({"thresholds": (2048, 2048, 4096)}, "strictly increasing"),
                    ({"thresholds": (0, 10, 20)}, "positive ints"),
                    ({"thresholds": ()}, "positive ints"),
                    ({"quanta": (2048, 1024, 512)}, "one quantum per level"),
                    ({"quanta": (2048, 1024, 0, 256)}, "positive ints"),
                    ({"beta": 0.0}, "beta"), ({"beta": float("nan")}, "beta"),
                    ({"max_num_batched_tokens": 0}, "max_num_batched_tokens")]:
        with pytest.raises(ValueError, match=msg):
            AutellixPolicy(**kw)


# -- (e) end to end ----------------------------------------------------------------------
def test_simengine_run_completes_and_is_deterministic() -> None:
    # a small KV pool so that preemptions (re-entries with preempted=True) happen too
    eng = make_sim_engine(num_gpu_blocks=600, audit=True)
    reqs = prepare_requests(make_augmix(rate=8.0, duration_s=15.0), eng, seed=7)
    pol = AutellixPolicy()
    first = eng.run(reqs, pol)
    assert len(first.records) == len(reqs) > 50
    assert all(r.finished for r in first.records)
    assert first.stats["preemptions"] > 0
    assert any(r.num_calls > 0 for r in reqs)
    assert not pol._programs and not pol._calls and not pol._live  # nothing kept after the run
    again = eng.run(reqs, AutellixPolicy())
    assert per_request_table(first.records, "ttft:1000") == per_request_table(again.records,
                                                                               "ttft:1000")


@st.composite
def _sessions(draw) -> list[AugRequest]:
    """Up to 12 requests of up to 4 calls in up to 3 sessions (programs)."""
    reqs, t = [], 0.0
    for i in range(draw(st.integers(1, 12))):
        t += draw(st.floats(0.0, 0.2))
        nseg = draw(st.integers(1, 4))
        segs = [Segment(draw(st.integers(1, 60)),
                        ToolCall("a", draw(st.floats(0.0, 0.5)), draw(st.integers(0, 40)))
                        if k < nseg - 1 else None) for k in range(nseg)]
        reqs.append(AugRequest(f"q{i}", t, draw(st.integers(1, 120)), tuple(segs),
                               session_id=f"s{draw(st.integers(0, 2))}"))
    return reqs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=_sessions(), blocks=st.integers(24, 120), caching=st.booleans(),
       beta=st.sampled_from([0.25, 2.0]))
def test_random_programs_finish_with_small_levels(reqs, blocks, caching, beta) -> None:
    """Small thresholds (and beta) so that levels, promotions and preemptions happen; the engine's
    audit checks KV accounting every step; stretch skipping changes nothing."""
    out = []
    for skip in (True, False):
        eng = make_sim_engine(num_gpu_blocks=blocks, max_num_seqs=8, max_num_batched_tokens=64,
                              prefix_caching=caching, audit=True, skip_stretches=skip)
        pol = AutellixPolicy(thresholds=(20, 60, 150), beta=beta, max_num_batched_tokens=64)
        out.append(eng.run(reqs, pol))
        assert all(r.finished for r in out[-1].records)
        assert not pol._programs and not pol._calls
    for a, b in zip(out[0].records, out[1].records, strict=True):
        assert np.array_equal(a.token_s, b.token_s)


# -- (f) config ----------------------------------------------------------------------------
def test_config_instantiates_through_hydra() -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", ["policy=[autellix]"])
    assert list(cfg.policies) == ["autellix"]
    pol = instantiate(cfg.policies.autellix)
    assert isinstance(pol, AutellixPolicy) and pol.name == "autellix"
    assert pol.thresholds == (2048, 8192, 32768) and pol.quanta == (2048, 1024, 512, 256)
    assert pol.beta == 2.0 and pol.token_budget(STATE) == tuned_value(
        "llama3_8b_a100", "autellix", "max_num_batched_tokens", 2048)
