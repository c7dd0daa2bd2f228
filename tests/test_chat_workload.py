"""Multi-turn chat sessions (predictors/chat.py): contexts grow as the conversation's prompts do,
human turns are calls, training conversations are left out, bad input is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from augserve.workload.errors import WorkloadError
from augserve.workload.holdout import load_holdout
from predictors.chat import HUMAN, ChatSource, ThinkTime, conversations
from predictors.data import load_source

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ARTIFACT = ROOT / "data" / "predictors" / "lgbm"


@pytest.fixture(scope="module")
def source() -> ChatSource:
    if not (DATA / "tooltalk").is_dir():
        pytest.skip(f"real data absent: {DATA / 'tooltalk'}")
    return ChatSource(data_dir=DATA)


@pytest.fixture(scope="module")
def rows():
    if not (DATA / "tooltalk").is_dir():
        pytest.skip(f"real data absent: {DATA / 'tooltalk'}")
    return {r.rid: r for r in load_source("tooltalk", DATA)[0]}


def test_every_multi_turn_conversation_is_a_session(source, rows) -> None:
    # 78 conversations, 230 assistant turns; 16 have a single turn (no human turn in between)
    convs, skipped = conversations(list(rows.values()))
    assert skipped == 0 and len(convs) == 78
    multi = [c for c in convs if len(c) > 1]
    assert len(source.pool) == len(multi) == 62 and source.single_turn == 16
    assert sum(s.metadata["turns"] for s in source.pool) == sum(len(c) for c in multi)


def test_the_context_at_each_turn_is_that_turns_prompt(source, rows) -> None:
    for s in source.pool:
        turn_rows = [rows[rid] for rid in s.metadata["turn_rids"]]
        assert s.prompt_tokens == turn_rows[0].prompt_tokens
        ctx, k = s.prompt_tokens, 0
        calls = []
        for seg in s.segments:
            ctx += seg.gen_tokens
            if seg.call is None:
                continue
            ctx += seg.call.return_tokens
            if seg.call.kind == HUMAN:
                k += 1
                assert ctx == turn_rows[k].prompt_tokens, (s.rid, k)  # grows as the rows do
            else:
                calls.append((seg.call.kind, seg.call.return_tokens))
        assert k == len(turn_rows) - 1
        want = [(c, t) for r in turn_rows for c, t in zip(r.calls, r.return_tokens, strict=True)]
        assert calls == want  # the tool calls and their returns are the conversation's
        gains = s.metadata["human_return_tokens"]
        assert len(gains) == k and min(gains) >= 1


def test_think_times_follow_infercepts_recorded_human_think_times(source) -> None:
    q = yaml.safe_load((ROOT / "data" / "augmix.yaml").read_text())
    recorded = q["components"]["chatbot"]["tool_time_s"]
    t = np.array([seg.call.duration_s for s in source.pool for seg in s.segments
                  if seg.call is not None and seg.call.kind == HUMAN])
    assert len(t) == 230 - 16 - 62 and t.min() >= recorded[0] and t.max() <= recorded[-1] == 60.0
    # a larger sample against the recorded median (20.8 s) and 90th percentile (52.1 s)
    draws = np.array([ThinkTime.infercept_chatbot().draw(np.random.default_rng(i))
                      for i in range(4000)])
    assert abs(np.median(draws) - recorded[q["quantile_levels"].index(0.5)]) < 1.5
    assert abs(np.quantile(draws, 0.9) - recorded[q["quantile_levels"].index(0.9)]) < 2.5
    with pytest.raises(ValueError, match="non-decreasing"):
        ThinkTime([0.0, 1.0], [5.0, 1.0])


def test_conversations_a_predictor_was_fit_on_are_left_out(rows) -> None:
    held = load_holdout(ARTIFACT)
    src = ChatSource(data_dir=DATA, holdout=held)
    assert src.held_back + len(src.pool) == 62 and len(src.pool) >= 1
    for s in src.pool:
        assert all(rid in held["tooltalk"] for rid in s.metadata["turn_rids"])


def test_sources_without_turns_and_malformed_files_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="chat sessions are built from tooltalk"):
        ChatSource(["bfcl"], data_dir=DATA)
    bad = tmp_path / "tooltalk" / "easy"
    bad.mkdir(parents=True)
    (bad / "x.json").write_text('{"conversation_id": "c",\n "conversation": [}')
    with pytest.raises(WorkloadError, match=r"x\.json:2: invalid JSON"):
        ChatSource(data_dir=tmp_path)
    (bad / "x.json").write_text('{"conversation_id": "c", "suites_used": [], "apis_used": [], '
                                '"conversation": [{"role": "bot", "text": "hi"}]}')
    with pytest.raises(WorkloadError, match=r"x\.json.*role.*turn 0"):
        ChatSource(data_dir=tmp_path)


def test_same_seed_same_sessions(source) -> None:
    again = ChatSource(data_dir=DATA)
    assert [s.segments for s in again.pool] == [s.segments for s in source.pool]


def test_serve_runs_every_policy_on_chat_tools(tmp_path, source) -> None:
    names = sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml"))
    out = subprocess.run(
        [sys.executable, "serve.py", f"policy=[{','.join(names)}]", "workload=chat_tools",
         "workload.rate=1", "workload.duration_s=60", "progress=false", "plots=false",
         f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import csv

    got = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert sorted(r["policy"] for r in got) == names
    assert all(r["completed"] == r["num_requests"] and int(r["num_requests"]) > 0 for r in got)
