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
before) are sessions: ToolTalk's 62 multi-turn conversations are. BFCL's converted rows are
single-turn categories and API-Bank's rows are not prefix-extending; those sources are refused
until their converters emit turns (``skipped``).

**Human think time**: drawn from the human think times recorded in InferCept's mixture
(``infercept_mix/merged_exp_uniform.json``, Chatbot requests, whose ``api_time`` is the human
think time, capped at 60 s by its authors; ``SOURCE.md``), through the quantiles shipped in
``data/augmix.yaml`` (``components.chatbot.tool_time_s``; median 20.8 s), linearly interpolated.
Tool latency: :class:`~predictors.workload.ToolTimeModel` (ToolTalk's APIs are ``web_api``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import yaml

from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload import make_arrivals
from augserve.workload.base import ScriptSource
from augserve.workload.holdout import load_holdout, usable
from augserve.workload.sampled import SampledWorkload
from predictors.data import DEFAULT_DATA_DIR
from predictors.schema import ToolUseRow
from predictors.workload import LengthPools, ToolTimeModel, _converted, rows_to_requests

HUMAN = "human"  # the tool kind of a user's turn
SESSION_SOURCES = ("tooltalk",)  # converters whose rows are the turns of a conversation
AUGMIX = Path(__file__).resolve().parents[1] / "data" / "augmix.yaml"


class ThinkTime:
    """Human think time (s): inverse-CDF draws from shipped quantiles (see the module)."""

    def __init__(self, levels: Sequence[float], values: Sequence[float]) -> None:
        lv, vs = np.asarray(levels, float), np.asarray(values, float)
        if lv.shape != vs.shape or len(lv) < 2 or np.any(np.diff(lv) < 0) or np.any(
                np.diff(vs) < 0) or lv[0] != 0.0 or lv[-1] != 1.0 or vs[0] < 0:
            raise ValueError("think-time quantiles must be non-decreasing levels 0..1 and "
                             "non-negative, non-decreasing values of the same length")
        self.levels, self.values = lv, vs

    @classmethod
    def infercept_chatbot(cls, path: str | Path = AUGMIX) -> ThinkTime:
        doc = yaml.safe_load(Path(path).read_text())
        return cls(doc["quantile_levels"], doc["components"]["chatbot"]["tool_time_s"])

    def draw(self, rng: np.random.Generator) -> float:
        return float(np.interp(rng.random(), self.levels, self.values))


def _context_end(script: AugRequest) -> int:
    """Context (tokens) when ``script``'s last segment ends."""
    return script.prompt_tokens + sum(s.gen_tokens + (s.call.return_tokens if s.call else 0)
                                      for s in script.segments)


def conversations(rows: Sequence[ToolUseRow]) -> tuple[list[list[ToolUseRow]], int]:
    """The rows' conversations in turn order, and how many groups are not one (their prompts
    do not extend each other)."""
    by: dict[tuple[str, str], list[ToolUseRow]] = {}
    for r in rows:
        by.setdefault((r.source, r.group), []).append(r)
    out, skipped = [], 0
    for key in sorted(by):
        turns = sorted(by[key], key=lambda r: int(r.meta.get("turn", 0)))
        if all(b.prompt_text.startswith(a.prompt_text) for a, b in zip(turns, turns[1:],
                                                                         strict=False)):
            out.append(turns)
        else:
            skipped += 1
    return out, skipped


def session_script(turns: Sequence[AugRequest], think_s: Sequence[float],
                   next_prompts: Sequence[int]) -> AugRequest:
    """One request from a conversation's per-turn scripts: turn ``k``'s last segment calls
    ``human`` for ``think_s[k]`` s, returning what the context gains up to ``next_prompts[k]``
    (turn ``k+1``'s prompt, tokens)."""
    first = turns[0]
    segs: list[Segment] = []
    ctx = first.prompt_tokens
    grown = []
    for k, t in enumerate(turns):
        body = list(t.segments)
        ctx += sum(s.gen_tokens + (s.call.return_tokens if s.call else 0) for s in body)
        if k + 1 < len(turns):
            gain = max(1, int(next_prompts[k]) - ctx)
            grown.append(gain)
            body[-1] = Segment(body[-1].gen_tokens, ToolCall(HUMAN, float(think_s[k]), gain))
            ctx += gain
        segs.extend(body)
    meta = dict(first.metadata)
    meta.update(turns=len(turns), script_rid=f"session:{first.metadata['group']}",
                human_return_tokens=tuple(grown),
                turn_rids=tuple(t.metadata["script_rid"] for t in turns))
    return AugRequest(rid=f"session:{first.metadata['group']}", arrival_s=0.0,
                      prompt_tokens=first.prompt_tokens, segments=tuple(segs),
                      aug_type=first.aug_type, prompt_text=first.prompt_text,
                      metadata=MappingProxyType(meta), prefix=first.prefix)


class ChatSource(ScriptSource):
    """Conversations of ``sources`` as sessions, drawn uniformly with replacement.

    Built once with ``np.random.default_rng(seed)`` (fills, tool and think times fixed per
    session). A conversation with any row a predictor artifact was fit on (``holdout``) is left
    out (``held_back``); the split keeps a conversation's rows together, so it is all or none.
    Conversations whose prompt does not fit ``max_model_len`` at some turn are left out
    (``dropped``).
    """

    def __init__(self, sources: Sequence[str] | str = SESSION_SOURCES,
                 data_dir: str | Path = DEFAULT_DATA_DIR, seed: int = 0,
                 tool_time: ToolTimeModel | None = None, think: ThinkTime | None = None,
                 max_model_len: int | None = None,
                 holdout: Mapping[str, frozenset[str]] | None = None) -> None:
        names = [sources] if isinstance(sources, str) else [str(s) for s in sources]
        bad = [n for n in names if n not in SESSION_SOURCES]
        if not names or bad:
            raise ValueError(f"sources {bad or names}: chat sessions are built from "
                             f"{', '.join(SESSION_SOURCES)} (the converters whose rows are "
                             "the turns of a conversation)")
        tool_time = ToolTimeModel() if tool_time is None else tool_time
        think = ThinkTime.infercept_chatbot() if think is None else think
        root = str(Path(data_dir).resolve())
        rows = [r for n in names for r in _converted(n, root)[0]]
        pools = LengthPools.from_rows(rows)
        convs, self.skipped = conversations(rows)
        rng = np.random.default_rng(seed)
        self.held_back = self.dropped = 0
        self.single_turn = 0
        self.pool: list[AugRequest] = []
        for turns in convs:
            if len(turns) < 2:
                self.single_turn += 1
                continue
            if not all(usable(r.source, r.rid, holdout) for r in turns):
                self.held_back += 1
                continue
            if max_model_len is not None and (turns[-1].prompt_tokens
                                              + turns[-1].tools_schema_tokens >= max_model_len):
                self.dropped += 1
                continue
            scripts = rows_to_requests(turns, tool_time, rng, pools=pools)
            think_s = [think.draw(rng) for _ in turns[1:]]
            nxt = [s.prompt_tokens for s in scripts[1:]]
            self.pool.append(session_script(scripts, think_s, nxt))
        if not self.pool:
            raise ValueError(f"no usable conversations in {names} (held back: {self.held_back},"
                             f" dropped for max_model_len={max_model_len}: {self.dropped})")

    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        return [self.pool[i] for i in rng.integers(0, len(self.pool), size=n)]


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
) -> SampledWorkload:
    """Chat sessions (``rate``: sessions/s over ``duration_s`` s); ``holdout``: a predictor
    artifact directory, whose training conversations are left out."""
    held = load_holdout(holdout) if holdout is not None else None
    src = ChatSource(sources, data_dir, seed_scripts, max_model_len=max_model_len, holdout=held)
    return SampledWorkload(src, make_arrivals(arrivals, rate, burstiness, azure_path),
                           duration_s, max_model_len=max_model_len, max_requests=max_requests)
