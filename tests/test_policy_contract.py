"""The policy contract (augserve/sched/base.py): the queue calls, the static-key adapter, and
``token_budget`` without side effects for every shipped policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_augserve_policy import _at, _StubView, _TablePredictor

from augserve.contract import EngineInfo, EngineState
from augserve.engine.factory import make_sim_engine
from augserve.metrics import per_request_table
from augserve.sched.augserve import AugServePolicy
from augserve.sched.keyed import KeyedPolicy
from augserve.serving import prepare_requests, split_policy_config
from augserve.workload import make_augmix

ROOT = Path(__file__).resolve().parents[1]

POLICIES = sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml"))


class _Keyed(KeyedPolicy):
    """Static keys from a table; equal keys tie."""

    name = "keyed"

    def __init__(self, keys: dict[str, int]) -> None:
        self.keys = keys

    def priority(self, view, state: EngineState) -> tuple:
        return (self.keys[view.rid],)

    def token_budget(self, state: EngineState) -> int:
        return 512

    def on_intercept(self, view, state):
        raise AssertionError("no calls here")


def _info() -> EngineInfo:
    return make_sim_engine().info()


def _order(pol, t: float = 0.0, fits=lambda v: True) -> list[str]:
    return [v.rid for v in pol.candidates(_at(t), fits)]


def test_keyed_ties_go_in_arrival_order_across_reentries() -> None:
    pol = _Keyed({"a": 1, "b": 1, "c": 0})
    pol.reset(_info())
    a, b, c = _StubView("a", 0.0), _StubView("b", 0.1), _StubView("c", 0.2)
    for v in (a, b, c):
        pol.on_enqueue(v, _at(v.arrival_s))
    assert _order(pol) == ["c", "a", "b"]
    pol.on_admit(a)
    assert _order(pol) == ["c", "b"]
    pol.on_enqueue(a, _at(1.0))  # back (a preemption): still ahead of b, first seen earlier
    assert _order(pol) == ["c", "a", "b"]
    pol.on_admit(a)
    pol.on_leave(a)  # finished: forgotten, so a new entry of "a" is a newcomer
    pol.on_enqueue(a, _at(2.0))
    assert _order(pol) == ["c", "b", "a"]


def test_keyed_walk_advances_without_admissions_and_can_be_abandoned() -> None:
    pol = _Keyed({"a": 0, "b": 1, "c": 2})
    pol.reset(_info())
    for i, rid in enumerate("abc"):
        pol.on_enqueue(_StubView(rid, float(i)), _at(float(i)))
    walk = pol.candidates(_at(3.0), lambda v: True)
    assert next(walk).rid == "a"  # not admitted (a vLLM pass that popped it as blocked)
    assert next(walk).rid == "b"
    del walk
    assert _order(pol) == ["a", "b", "c"]  # nothing was lost by the abandoned walk
    pol.on_leave(_StubView("b", 1.0))  # aborted while waiting: gone from the queue
    assert _order(pol) == ["a", "c"]


def test_value_queue_abort_before_valuation_leaves_nothing_behind() -> None:
    pol = AugServePolicy(_TablePredictor({"a": 10, "b": 20}), 2048, starve_after_s=None)
    pol.reset(_info())
    a, b = _StubView("a", 0.0), _StubView("b", 0.0)
    pol.on_enqueue(a, _at(0.0))
    pol.on_enqueue(b, _at(0.0))
    pol.on_leave(a)  # aborted before the policy valued it (still pending)
    assert _order(pol, 0.1) == ["b"]
    assert len(pol.queue) == 1
    pol.on_leave(b)
    assert _order(pol, 0.2) == [] and len(pol.queue) == 0


def _policy(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", [f"policy=[{name}]", "predictor=lgbm"])
    return instantiate(split_policy_config(cfg.policies[name])[0])


@pytest.mark.parametrize("name", POLICIES)
def test_token_budget_has_no_side_effects(name: str) -> None:
    """Asking for the budget three times a step changes nothing in a run (the contract lets
    an engine ask as often as it likes; the decision itself is made in ``on_step``)."""
    engine = make_sim_engine()
    reqs = prepare_requests(make_augmix(rate=12.0, duration_s=20.0), engine, seed=3)
    plain = per_request_table(engine.run(reqs, _policy(name)).records, "ttft:1000")
    asked = _policy(name)
    once = asked.token_budget

    def thrice(state: EngineState) -> int:
        values = {once(state) for _ in range(3)}
        assert len(values) == 1, f"{name}: token_budget gave {values} for one state"
        return values.pop()

    asked.token_budget = thrice  # type: ignore[method-assign]
    again = per_request_table(engine.run(reqs, asked).records, "ttft:1000")
    assert len(plain) == len(reqs) and plain == again


def test_an_aborted_tier_offer_is_not_a_tier_admission() -> None:
    pred = _TablePredictor({"old1": 500, "old2": 400, "new": 1})
    pol = AugServePolicy(pred, 2048, starve_after_s=5.0, starve_every_s=1.0)
    pol.reset(_info())
    o1, o2, new = _StubView("old1", 0.0), _StubView("old2", 0.1), _StubView("new", 6.0)
    for v in (o1, o2, new):
        pol.on_enqueue(v, _at(v.arrival_s))
    assert _order(pol, 6.0)[0] == "old1"  # a tier turn: the FIFO head is offered first
    pol.on_leave(o1)  # aborted, not admitted: the tier's turn is not used up
    assert _order(pol, 6.1)[0] == "old2"  # (a used turn would put "new" first until 7.0)
    pol.on_admit(o2)  # an admission from the tier uses the turn
    assert _order(pol, 6.5) == ["new"]
