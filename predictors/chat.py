"""Multi-turn chat with tools and a human in the loop: one request per conversation.

A conversation's rows (one per assistant turn, :mod:`predictors.data`, grouped by ``group`` and
ordered by ``meta["turn"]``) become one :class:`~augserve.request.AugRequest`: each assistant
turn's segments and tool calls as :func:`predictors.workload.rows_to_requests` builds them, and
between two turns a call of kind ``"human"`` — the user reading the answer and typing the next
message — whose return is what the context gains before the next turn: the next row's prompt
minus the context at the end of this turn (the user's message and the transcript's role markers;
at least 1 token). So the context grows over the session exactly as the rows' prompts do, and the
engine keeps (or drops) the KV across a human turn as it does across any call.

Only conversations whose prompts grow by extension (each turn's prompt text starts with the one
before) are sessions. A conversation is the rows of one ``group`` and ``meta["category"]``:
ToolTalk's 62 multi-turn conversations, and BFCL's 800 ``multi_turn_*`` ones (200 per variant:
base, long_context, miss_func, miss_param; the four variants share a group, so the category
tells them apart). BFCL records ground-truth calls but no call results and no assistant text:
returns and final answers are filled from the other rows' lengths
(:class:`~predictors.workload.LengthPools`), and a BFCL think time is the typing time of the next
user message alone. API-Bank is refused: its groups are tool sets, not dialogues. Sources are
drawn in equal shares (``mix="source"``), as toolmix does, since BFCL has 13x ToolTalk's
conversations.

**Human think time** is InferCept's own rule, recovered from its mixture: every one of the 225
Chatbot calls of ``infercept_mix/merged_exp_uniform.json`` has ``api_time = min(60, 60·words(
completion)/700 + 60·words(next user message)/35)`` s (reading at 700 words/min, typing at 35,
capped at 60 s; ``SOURCE.md`` calls it the human think time; a test checks the rule on that
file). Here it is applied to ToolTalk's own text: the assistant's reply of the turn (read) and
the user's next message (typed). Tool latency: :class:`~predictors.workload.ToolTimeModel`
(ToolTalk's APIs are ``web_api``).

**What a predictor sees**: the request's ``prompt_text`` is the first turn's (arrival
information: nothing later is known then), and the Stage I artifact was trained on single turns,
so its arrival predictions are far below a session's totals (on the held-out sessions, median
67 predicted vs 339 actual output tokens, 1 vs 7 calls). Predictors have no feature for the kind
of the call being made, so a ``human`` call is valued like an API call at arrival; policies that
keep per-kind running means of tool time (``kind_means``) learn it online.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from augserve.request import HUMAN, AugRequest, Segment, ToolCall
from augserve.workload import make_arrivals
from augserve.workload.base import ScriptSource
from augserve.workload.holdout import load_holdout, usable
from augserve.workload.sampled import SampledWorkload
from predictors.data import DEFAULT_DATA_DIR
from predictors.schema import ToolUseRow
from predictors.workload import LengthPools, ToolTimeModel, _converted, rows_to_requests

SESSION_SOURCES = ("tooltalk", "bfcl")  # converters whose rows are the turns of a conversation


class ThinkTime:
    """InferCept's human think time (s): reading the reply, typing the next message."""

    def __init__(self, read_wpm: float = 700.0, type_wpm: float = 35.0,
                 cap_s: float = 60.0) -> None:
        if not (read_wpm > 0 and type_wpm > 0 and cap_s >= 0):
            raise ValueError("read_wpm and type_wpm must be > 0 and cap_s >= 0")
        self.read_wpm, self.type_wpm, self.cap_s = float(read_wpm), float(type_wpm), float(cap_s)

    def seconds(self, read: str, typed: str) -> float:
        return min(self.cap_s, 60.0 * len(read.split()) / self.read_wpm
                   + 60.0 * len(typed.split()) / self.type_wpm)


_ROLE = re.compile(r"^(user|assistant call|tool result|assistant): ", re.MULTILINE)


def between_turns(before: str, after: str) -> tuple[str, str]:
    """(the assistant's reply, the user's next message) in the transcript ``after`` adds to
    ``before`` (ToolTalk's rendering, :mod:`predictors.data.tooltalk`)."""
    added = after[len(before):]
    marks = list(_ROLE.finditer(added))
    reply, typed = [], []
    for m, nxt in zip(marks, [*marks[1:], None], strict=False):
        text = added[m.end(): nxt.start() if nxt else len(added)].strip()
        if m.group(1) == "assistant":
            reply.append(text)
        elif m.group(1) == "user":
            typed.append(text)
    return " ".join(reply), " ".join(typed)


def conversations(rows: Sequence[ToolUseRow]) -> tuple[list[list[ToolUseRow]], int]:
    """The rows' conversations in turn order, and how many groups are not one (two rows with
    one turn number, or prompts that do not extend each other). Rows without ``meta["turn"]``
    (BFCL's single-turn categories) are no turn of a conversation and are left out."""
    by: dict[tuple[str, str, str], list[ToolUseRow]] = {}
    for r in rows:
        if "turn" in r.meta:
            by.setdefault((r.source, r.group, str(r.meta.get("category", ""))), []).append(r)
    out, skipped = [], 0
    for key in sorted(by):
        turns = sorted(by[key], key=lambda r: int(r.meta["turn"]))
        order = [int(r.meta["turn"]) for r in turns]
        if len(set(order)) == len(order) and all(
                b.prompt_text.startswith(a.prompt_text)
                for a, b in zip(turns, turns[1:], strict=False)):
            out.append(turns)
        else:
            skipped += 1
    return out, skipped


def session_script(turns: Sequence[AugRequest], think_s: Sequence[float],
                   next_prompts: Sequence[int],
                   unwritten: Sequence[int] | None = None) -> AugRequest:
    """One request from a conversation's per-turn scripts: turn ``k``'s last segment calls
    ``human`` for ``think_s[k]`` s, returning what the context gains up to ``next_prompts[k]``
    (turn ``k+1``'s prompt, tokens), counting ``unwritten[j]`` (j <= k) in: the tokens of turn
    ``j`` that the prompts' text does not hold (filled returns and answers: BFCL records
    none)."""
    unwritten = [0] * len(turns) if unwritten is None else unwritten
    first = turns[0]
    segs: list[Segment] = []
    ctx = first.prompt_tokens
    hidden = 0  # tokens of the context so far that the transcript does not hold
    grown = []
    for k, t in enumerate(turns):
        body = list(t.segments)
        ctx += sum(s.gen_tokens + (s.call.return_tokens if s.call else 0) for s in body)
        if k + 1 < len(turns):
            hidden += int(unwritten[k])
            gain = max(1, int(next_prompts[k]) - ctx + hidden)
            grown.append(gain)
            body[-1] = Segment(body[-1].gen_tokens, ToolCall(HUMAN, float(think_s[k]), gain))
            ctx += gain
        segs.extend(body)
    meta = dict(first.metadata)
    rid = f"session:{first.metadata['source']}:{first.metadata['group']}"
    classes: list[str] = []
    filled: dict[str, str] = {}
    for k, t in enumerate(turns):
        classes.extend(t.metadata["tool_classes"])
        filled.update(t.metadata["filled"])
        if k + 1 < len(turns):
            classes.append(HUMAN)
    meta.update(turns=len(turns), script_rid=rid, human_return_tokens=tuple(grown),
                turn_rids=tuple(t.metadata["script_rid"] for t in turns),
                tool_classes=tuple(classes), filled=filled)
    return AugRequest(rid=rid, arrival_s=0.0,
                      prompt_tokens=first.prompt_tokens, segments=tuple(segs),
                      aug_type=first.aug_type, prompt_text=first.prompt_text,
                      metadata=MappingProxyType(meta), prefix=first.prefix)


def _unwritten(row: ToolUseRow, script: AugRequest) -> int:
    """Tokens of ``script`` that ``row`` left unrecorded (filled), so not in the transcript."""
    n = 0
    for k, seg in enumerate(script.segments):
        if seg.call is not None and row.return_tokens[k] is None:
            n += seg.call.return_tokens
        if row.segment_tokens[k] is None:
            n += seg.gen_tokens
    return n


class ChatSource(ScriptSource):
    """Conversations of ``sources`` as sessions, drawn with replacement (``mix``).

    Built once with ``np.random.default_rng(seed)`` (fills and tool times fixed per session;
    think times follow from the text). A conversation with any row a predictor artifact was fit
    on (``holdout``) is left out (``held_back``; with the shipped artifact 47 of 62, leaving
    15); the artifact's split is by group (a conversation), so a partly held-out conversation
    would be a split that broke that rule: they are counted in ``partly_held``. Conversations
    whose prompt does not fit ``max_model_len`` at some turn are left out (``dropped``).
    """

    def __init__(self, sources: Sequence[str] | str = SESSION_SOURCES,
                 data_dir: str | Path = DEFAULT_DATA_DIR, seed: int = 0,
                 tool_time: ToolTimeModel | None = None, think: ThinkTime | None = None,
                 max_model_len: int | None = None,
                 holdout: Mapping[str, frozenset[str]] | None = None,
                 mix: str = "source") -> None:
        if mix not in ("source", "rows"):
            raise ValueError(f"mix must be 'source' (equal share per source) or 'rows' "
                             f"(uniform over conversations), got {mix!r}")
        self.mix = mix
        names = [sources] if isinstance(sources, str) else [str(s) for s in sources]
        self.sources = tuple(names)
        bad = [n for n in names if n not in SESSION_SOURCES]
        if not names or bad:
            raise ValueError(f"sources {bad or names}: chat sessions are built from "
                             f"{', '.join(SESSION_SOURCES)} (the converters whose rows are "
                             "the turns of a conversation)")
        tool_time = ToolTimeModel() if tool_time is None else tool_time
        think = ThinkTime() if think is None else think
        root = str(Path(data_dir).resolve())
        rows = [r for n in names for r in _converted(n, root)[0]]
        pools = LengthPools.from_rows(rows)
        convs, self.skipped = conversations(rows)
        rng = np.random.default_rng(seed)
        self.held_back = self.dropped = self.partly_held = 0
        self.single_turn = 0
        self.pool: list[AugRequest] = []
        for turns in convs:
            if len(turns) < 2:
                self.single_turn += 1
                continue
            ok = [usable(r.source, r.rid, holdout) for r in turns]
            if not all(ok):
                self.held_back += 1
                self.partly_held += any(ok)
                continue
            if max_model_len is not None and (turns[-1].prompt_tokens
                                              + turns[-1].tools_schema_tokens >= max_model_len):
                self.dropped += 1
                continue
            scripts = rows_to_requests(turns, tool_time, rng, pools=pools)
            think_s = [think.seconds(*between_turns(a.prompt_text, b.prompt_text))
                       for a, b in zip(turns, turns[1:], strict=False)]
            nxt = [s.prompt_tokens for s in scripts[1:]]
            self.pool.append(session_script(scripts, think_s, nxt,
                                            [_unwritten(r, s) for r, s in zip(turns, scripts,
                                                                               strict=True)]))
        if not self.pool:
            raise ValueError(f"no usable conversations in {names} (held back: {self.held_back},"
                             f" dropped for max_model_len={max_model_len}: {self.dropped})")

    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        if self.mix == "rows":
            return [self.pool[i] for i in rng.integers(0, len(self.pool), size=n)]
        by = [[s for s in self.pool if s.metadata["source"] == name] for name in self.sources]
        by = [b for b in by if b]
        src = rng.integers(0, len(by), size=n)
        return [by[k][int(rng.integers(0, len(by[k])))] for k in src]


def make_chat_workload(
    sources: Sequence[str] | str = SESSION_SOURCES,
    rate: float | None = 0.5,
    duration_s: float = 600.0,
    data_dir: str | Path = "../shared/data",
    burstiness: float = 1.0,
    arrivals: str = "poisson",
    azure_path: str | Path | None = None,
    max_model_len: int | None = None,
    seed_scripts: int = 0,
    max_requests: int | None = None,
    holdout: str | Path | None = None,
    mix: str = "source",
) -> SampledWorkload:
    """Chat sessions (``rate``: sessions/s over ``duration_s`` s); ``holdout``: a predictor
    artifact directory, whose training conversations are left out; ``mix``: ``source`` (equal
    share per source) or ``rows`` (uniform over conversations)."""
    held = load_holdout(holdout) if holdout is not None else None
    src = ChatSource(sources, data_dir, seed_scripts, max_model_len=max_model_len, holdout=held,
                     mix=mix)
    return SampledWorkload(src, make_arrivals(arrivals, rate, burstiness, azure_path),
                           duration_s, max_model_len=max_model_len, max_requests=max_requests)
