"""Multi-turn chat sessions (predictors/chat.py): contexts grow as the conversation's prompts do,
human turns are calls, training conversations are left out, bad input is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from augserve.workload.errors import WorkloadError
from augserve.workload.holdout import load_holdout
from predictors.chat import (
    HUMAN,
    ChatSource,
    ThinkTime,
    between_turns,
    conversations,
    session_script,
)
from predictors.data import load_source

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ARTIFACT = ROOT / "data" / "predictors" / "lgbm"


@pytest.fixture(scope="module")
def source() -> ChatSource:
    if not (DATA / "tooltalk").is_dir():
        pytest.skip(f"real data absent: {DATA / 'tooltalk'}")
    return ChatSource("tooltalk", data_dir=DATA)


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


def test_think_time_is_infercepts_rule_which_reproduces_its_mixture() -> None:
    path = DATA / "infercept_mix" / "merged_exp_uniform.json"
    if not path.is_file():
        pytest.skip(f"real data absent: {path}")
    rule = ThinkTime()
    calls = [s for k, v in json.loads(path.read_text()).items() if k.isdigit() for s in v
             if s.get("api_token") is not None and "api_time" in s]  # Chatbot: integer keys
    assert len(calls) == 225
    err = [abs(rule.seconds(s["completion"], s["api_token"]) - s["api_time"]) for s in calls]
    assert max(err) < 1e-9
    with pytest.raises(ValueError, match="must be > 0"):
        ThinkTime(read_wpm=0)


def test_a_sessions_think_time_reads_the_reply_and_types_the_next_message(source, rows) -> None:
    s = next(p for p in source.pool if p.rid.endswith("01874a95-d7de-48bc-b7a9-ffb1e26aa130"))
    a, b = (rows[r].prompt_text for r in s.metadata["turn_rids"][:2])
    assert between_turns(a, b) == ("I'm sorry to hear that. What is your username?",
                                   "It's mstein")
    first_human = next(g.call for g in s.segments if g.call is not None)
    assert first_human.kind == HUMAN
    assert first_human.duration_s == pytest.approx(60 * 9 / 700 + 60 * 2 / 35)
    t = [g.call.duration_s for p in source.pool for g in p.segments
         if g.call is not None and g.call.kind == HUMAN]
    assert len(t) == 230 - 16 - 62 and max(t) == 60.0  # one per turn boundary; capped


def test_a_human_turn_returns_at_least_one_token() -> None:
    from augserve.request import AugRequest, Segment

    turn = lambda rid, p: AugRequest(rid, 0.0, p, (Segment(5),), metadata={  # noqa: E731
        "source": "s", "group": "g", "script_rid": rid, "tool_classes": (), "filled": {}})
    s = session_script([turn("a", 10), turn("b", 12)], [1.0], [12])  # 10 + 5 > 12
    assert s.segments[0].call.return_tokens == 1 and s.metadata["human_return_tokens"] == (1,)
    s = session_script([turn("a", 10), turn("b", 40)], [1.0], [40])
    assert s.segments[0].call.return_tokens == 25 and s.rid == "session:s:g"


def test_conversations_a_predictor_was_fit_on_are_left_out(rows) -> None:
    held = load_holdout(ARTIFACT)
    src = ChatSource("tooltalk", data_dir=DATA, holdout=held)
    assert (len(src.pool), src.held_back, src.partly_held) == (15, 47, 0)  # split by group
    for s in src.pool:
        assert all(rid in held["tooltalk"] for rid in s.metadata["turn_rids"])
    # a holdout that misses one row of a conversation leaves the whole conversation out
    keep = src.pool[0].metadata["turn_rids"]
    partial = {"tooltalk": frozenset(set(held["tooltalk"]) - {keep[-1]})}
    src2 = ChatSource("tooltalk", data_dir=DATA, holdout=partial)
    assert (len(src2.pool), src2.partly_held) == (14, 1)
    assert src.pool[0].rid not in {s.rid for s in src2.pool}


def test_sources_without_turns_and_malformed_files_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="chat sessions are built from tooltalk, bfcl"):
        ChatSource(["api_bank"], data_dir=DATA)
    bad = tmp_path / "tooltalk" / "easy"
    bad.mkdir(parents=True)
    (bad / "x.json").write_text('{"conversation_id": "c",\n "conversation": [}')
    with pytest.raises(WorkloadError, match=r"x\.json:2: invalid JSON"):
        ChatSource("tooltalk", data_dir=tmp_path)
    (bad / "x.json").write_text('{"conversation_id": "c", "suites_used": [], "apis_used": [], '
                                '"conversation": [{"role": "bot", "text": "hi"}]}')
    with pytest.raises(WorkloadError, match=r"x\.json.*role.*turn 0"):
        ChatSource("tooltalk", data_dir=tmp_path)


def test_same_seed_same_sessions(source) -> None:
    again = ChatSource("tooltalk", data_dir=DATA)
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


@pytest.fixture(scope="module")
def bfcl_rows():
    if not (DATA / "bfcl").is_dir():
        pytest.skip(f"real data absent: {DATA / 'bfcl'}")
    return {r.rid: r for r in load_source("bfcl", DATA)[0]}


def test_bfcl_multi_turn_conversations_are_sessions(bfcl_rows) -> None:
    # 200 conversations per multi_turn variant (they share groups; the category tells them
    # apart), 6 of them a single turn; BFCL records no results or answers: those are filled,
    # so the context without the filled tokens is, at every turn, that turn's prompt
    src = ChatSource("bfcl", data_dir=DATA)
    assert len(src.pool) + src.single_turn == 800 and src.single_turn == 6
    cats = {bfcl_rows[s.metadata["turn_rids"][0]].meta["category"] for s in src.pool}
    assert cats == {"multi_turn_base", "multi_turn_long_context", "multi_turn_miss_func",
                    "multi_turn_miss_param"}
    think = ThinkTime()
    for s in src.pool[:200]:
        rows = [bfcl_rows[rid] for rid in s.metadata["turn_rids"]]
        written, k, segs = rows[0].prompt_tokens + rows[0].tools_schema_tokens, 0, s.segments
        for seg in segs:
            if seg.call is not None and seg.call.kind != HUMAN:
                written += seg.gen_tokens  # a call's text; answers and results are filled
            if seg.call is not None and seg.call.kind == HUMAN:
                written += seg.call.return_tokens
                k += 1
                assert written == rows[k].prompt_tokens + rows[k].tools_schema_tokens
                typed = between_turns(rows[k - 1].prompt_text, rows[k].prompt_text)[1]
                assert seg.call.duration_s == pytest.approx(think.seconds("", typed))
        assert k == len(rows) - 1


def test_chat_tools_draws_each_source_equally() -> None:
    if not (DATA / "bfcl").is_dir() or not (DATA / "tooltalk").is_dir():
        pytest.skip("real data absent")
    import numpy as np

    src = ChatSource(data_dir=DATA)
    assert src.sources == ("tooltalk", "bfcl")
    got = [s.metadata["source"] for s in src.draw(np.random.default_rng(0), 4000)]
    assert abs(got.count("tooltalk") / 4000 - 0.5) < 0.03
    rows = ChatSource(data_dir=DATA, mix="rows").draw(np.random.default_rng(0), 4000)
    assert [s.metadata["source"] for s in rows].count("tooltalk") / 4000 < 0.12
    with pytest.raises(ValueError, match="mix must be"):
        ChatSource(data_dir=DATA, mix="dataset")
