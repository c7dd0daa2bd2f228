"""No policy but the oracle reads the future: change what a request will do later (longer
segments, slower tools, longer returns) and every decision made before the change can be seen
stays the same.

For each policy (conf/policy/*.yaml but the oracle, built as serve.py builds it) a base run and
runs that each lengthen the future of one request, in two ways:

* ``all``: every segment, every tool duration and every return of the request; nothing of it
  shows before its first segment ends (its generated tokens keep counting), so the decision
  trace must be the same for every step that ends before that time in the base run;
* ``after_first_call``: segment 1 on, and the tools from call 1 on; the same holds until its
  second segment ends.

Lengthening only (never shortening) keeps the first visible difference at the base run's time.
The decision trace (:mod:`augserve.engine.trace`) holds each step's budget, admissions,
preemptions and KV modes; a small KV cache makes the policies preempt and pick KV modes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from augserve.engine.factory import make_sim_engine
from augserve.engine.trace import read_trace
from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload import make_augmix

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml") if p.stem != "oracle")
SEED = 3


def _policy(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", [f"policy=[{name}]", "predictor=lgbm", "slo.spec=ttft:1000"])
    return instantiate(cfg.policies[name])


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


def _segment_end_s(rec, k: int) -> float:
    """When segment ``k`` of a record produced its last token (s)."""
    idx = rec.seg_start_idx
    last = idx[k + 1] - 1 if k + 1 < len(idx) else len(rec.token_s) - 1
    return float(rec.token_s[last])


def _run(name: str, reqs: list[AugRequest], trace: Path):
    eng = make_sim_engine(profile="llama3_8b_a100", num_gpu_blocks=1500, max_num_seqs=64,
                          decision_trace=str(trace))
    return eng.run(reqs, _policy(name)), read_trace(trace)


@pytest.fixture(scope="module")
def requests() -> list[AugRequest]:
    reqs = make_augmix(rate=12.0, duration_s=25.0).requests(SEED)
    assert len(reqs) > 200
    return reqs


@pytest.mark.parametrize("name", POLICIES)
def test_decisions_do_not_depend_on_the_future(name: str, requests, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the policy configs name data/ paths relative to the repo
    base, base_trace = _run(name, requests, tmp_path / "base.jsonl")
    recs = {r.rid: r for r in base.records}
    multi = [r for r in requests if r.num_calls >= 2 and recs[r.rid].finished]
    # requests spread over the window, each with something to hide
    picks = [multi[i * (len(multi) - 1) // 3] for i in range(4)]
    checked = 0
    for r in picks:
        for first, seg in ((0, 0), (1, 1)):
            t_seen = _segment_end_s(recs[r.rid], seg)
            changed = [_longer(q, first) if q.rid == r.rid else q for q in requests]
            _, trace = _run(name, changed, tmp_path / f"{r.rid}_{first}.jsonl")
            before = [x for x in base_trace if x["t"] < round(t_seen, 6)]  # (as the trace rounds)
            assert before, f"{name}: no decision before {t_seen} s"
            assert trace[:len(before)] == before, (
                f"{name}: a decision before {t_seen:.3f} s changed when request {r.rid}'s "
                f"future (from segment {first}) changed")
            assert trace != base_trace, "the perturbation changed nothing (test too weak)"
            checked += len(before)
    assert checked > 100
