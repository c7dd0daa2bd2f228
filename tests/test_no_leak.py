"""No policy but the oracle reads the future: change what a request will do later (longer
segments, slower tools, longer returns) and every decision made before the change can be seen
stays the same.

For each policy (conf/policy/*.yaml but the oracle, built as serve.py builds it) a base run and
runs that each lengthen the future of one request, in four ways:

* everything (segments, tool durations, returns): nothing shows before its first segment ends
  (its generated tokens keep counting), so the decision trace must be the same for every step
  that ends before that time in the base run;
* everything from segment 1 on: the same until its second segment ends;
* call 0 alone, or call 1 alone (duration and returned tokens): the same until that call
  returns, which covers the KV decision taken when the call is made.

Lengthening only (never shortening) keeps the first visible difference at the base run's time.
The decision trace (:mod:`augserve.engine.trace`) holds each step's budget, admissions,
preemptions and KV modes; a small KV cache makes the policies preempt and pick KV modes. The
check itself is checked: the oracle and an InferCept that reads the true tool time must fail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from augserve.contract import EngineState, KVMode, RequestView
from augserve.engine.factory import make_sim_engine
from augserve.engine.trace import read_trace
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.infercept import InferCeptPolicy
from augserve.sched.minwaste import min_waste
from augserve.serving import split_policy_config
from augserve.workload import make_augmix

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml") if p.stem != "oracle")
SEED = 3


def _policy(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", [f"policy=[{name}]", "predictor=lgbm", "slo.spec=ttft:1000"])
    return instantiate(split_policy_config(cfg.policies[name])[0])


def _longer(r: AugRequest, first: int) -> AugRequest:
    """``r`` with segments from ``first`` on 40 tokens longer, and the calls from ``first`` on
    twice as long (+0.5 s) returning 30 tokens more."""
    segs = []
    for k, s in enumerate(r.segments):
        if k < first:
            segs.append(s)
            continue
        call = None if s.call is None else ToolCall(
            s.call.kind, 2 * s.call.duration_s + 0.5, s.call.return_tokens + 30)
        segs.append(Segment(s.gen_tokens + 40, call))
    return dataclasses.replace(r, segments=tuple(segs))


def _slower_tool(r: AugRequest, k: int) -> AugRequest:
    """``r`` with call ``k`` twice as long (+0.5 s) returning 30 tokens more (nothing else)."""
    segs = list(r.segments)
    c = segs[k].call
    segs[k] = Segment(segs[k].gen_tokens, ToolCall(c.kind, 2 * c.duration_s + 0.5,
                                                   c.return_tokens + 30))
    return dataclasses.replace(r, segments=tuple(segs))


def _segment_end_s(rec, k: int) -> float:
    """When segment ``k`` of a record produced its last token (s)."""
    idx = rec.seg_start_idx
    last = idx[k + 1] - 1 if k + 1 < len(idx) else len(rec.token_s) - 1
    return float(rec.token_s[last])


def _violations(make_policy, requests: list[AugRequest], tmp: Path) -> list[str]:
    """Probes whose decisions changed before the change they made could be seen."""
    base, base_trace = _run(make_policy, requests, tmp / "base.jsonl")
    recs = {r.rid: r for r in base.records}
    multi = [r for r in requests if r.num_calls >= 2 and recs[r.rid].finished]
    out: list[str] = []
    checked = 0
    for r in (multi[i * (len(multi) - 1) // 2] for i in range(3)):  # spread over the window
        rec = recs[r.rid]
        probes = [  # (what changes, the changed request, when the base run shows it first)
            ("everything", _longer(r, 0), _segment_end_s(rec, 0)),
            ("from segment 1", _longer(r, 1), _segment_end_s(rec, 1)),
            ("call 0", _slower_tool(r, 0), rec.tool_return_s[0]),
            ("call 1", _slower_tool(r, 1), rec.tool_return_s[1]),
        ]
        for what, changed_r, t_seen in probes:
            changed = [changed_r if q.rid == r.rid else q for q in requests]
            _, trace = _run(make_policy, changed, tmp / "probe.jsonl")
            before = [x for x in base_trace if x["t"] < round(t_seen, 6)]  # (as it rounds)
            assert before and trace != base_trace, "a probe that tests nothing"
            if trace[:len(before)] != before:
                out.append(f"request {r.rid}, {what}: a decision before {t_seen:.3f} s changed")
            checked += len(before)
    assert checked > 100
    return out


def _run(make_policy, reqs: list[AugRequest], trace: Path):
    eng = make_sim_engine(profile="llama3_8b_a100", num_gpu_blocks=1500, max_num_seqs=64,
                          decision_trace=str(trace))
    return eng.run(reqs, make_policy()), read_trace(trace)


@pytest.fixture(scope="module")
def requests() -> list[AugRequest]:
    reqs = make_augmix(rate=12.0, duration_s=25.0).requests(SEED)
    assert len(reqs) > 200
    return reqs


@pytest.mark.parametrize("name", POLICIES)
def test_decisions_do_not_depend_on_the_future(name: str, requests, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the policy configs name data/ paths relative to the repo
    assert _violations(lambda: _policy(name), requests, tmp_path) == []


class _PeeksAtTheTool(InferCeptPolicy):
    """InferCept's min-waste KV choice fed the call's true duration (a leak to be caught)."""

    oracle = True

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        call = view.script.segments[view.calls_done - 1].call  # the call just made
        w = min_waste(view.context_tokens, call.duration_s, state)
        waste = {KVMode.PRESERVE: w.preserve, KVMode.DISCARD: w.discard, KVMode.SWAP: w.swap}
        return min(self.modes, key=lambda m: (waste[m], self.modes.index(m)))


@pytest.mark.parametrize("name", ["oracle", "peeks_at_the_tool"])
def test_the_check_catches_a_policy_that_reads_the_script(name: str, requests, tmp_path: Path,
                                                          monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    make = (lambda: _policy("oracle")) if name == "oracle" else _PeeksAtTheTool
    assert _violations(make, requests, tmp_path)
