"""Built-in ``agentic_coding`` generator: coding-agent sessions matched to published aggregates.

The statistics and the model live in ``data/agentic_coding.yaml``, each figure with its source
(the GitHub Copilot Coding Agent Traces 2026 card for the means, TraceLab for the percentiles and
the tool and think times). A session is one :class:`~augserve.request.AugRequest`:

    first prompt → [turn: LLM call → tool batch → LLM call → … → LLM call] → human → [turn] …

Every LLM call is a segment (its completion tokens); between two calls of a turn, a *tool batch*
(parallel calls: one call of the longest call's kind that lasts as long as that call and returns
all the calls' tokens); between two turns, a call of kind :data:`HUMAN` whose duration is the
user's think time and whose return is the user's next message. Contexts grow over the session
as the transcript does, so a call's prompt is everything before it, and a prefix cache that
keeps the session's KV serves all of it but the new part.

What is matched (and tested against the published values): turns per session, tool batches and
tool calls per turn, calls per batch, completion tokens per call (mean and median), the median
new input per call, the served mean prompt per call, tool-time percentiles, think-time
percentiles. What is not: LLM calls per turn is batches + 1 = 7.53 (Copilot's 7.83 counts its
edit-apply model too); subagents' own LLM steps; context compaction (a session longer than the
model's context is cut there, :meth:`AugRequest.fit_context`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from augserve.request import HUMAN, AugRequest, Segment, ToolCall
from augserve.workload.base import ScriptSource
from augserve.workload.errors import WorkloadError, yaml_key_lines

#: ``data/agentic_coding.yaml`` at the repository root.
DEFAULT_STATS_PATH = Path(__file__).resolve().parents[2] / "data" / "agentic_coding.yaml"


@dataclass(frozen=True)
class LogNormal:
    """A lognormal law by its median and log-sigma, capped at ``max``."""

    median: float
    sigma: float
    max: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(self.max, self.median * np.exp(self.sigma * rng.standard_normal(n)))


@dataclass(frozen=True)
class AgenticModel:
    """The sampled model of ``data/agentic_coding.yaml`` (``model:``)."""

    turns_mean: float
    tool_batches_mean: float
    batch_size_mean: float
    completion: LogNormal
    returns: LogNormal
    first_prompt: LogNormal
    think: LogNormal
    tool_kinds: tuple[str, ...]
    tool_share: np.ndarray
    tool_time: tuple[LogNormal, ...]


class _Reader:
    """Checked access to the stats document: a bad value names file, line and field."""

    def __init__(self, path: Path, doc: dict[str, Any], lines: dict[tuple[str, ...], int]):
        self.path, self.doc, self.lines = path, doc, lines

    def error(self, reason: str, *keys: str) -> WorkloadError:
        line = None
        for n in range(len(keys), 0, -1):
            line = self.lines.get(tuple(keys[:n]))
            if line is not None:
                break
        return WorkloadError(reason, file=self.path, line=line, field=".".join(keys))

    def get(self, *keys: str) -> Any:
        node: Any = self.doc
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                raise self.error("missing", *keys[: i + 1])
            node = node[k]
        return node

    def number(self, *keys: str, low: float = 0.0, strict: bool = True) -> float:
        v = self.get(*keys)
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise self.error(f"must be a number, got {v!r}", *keys)
        if v < low or (strict and v == low):
            raise self.error(f"must be {'>' if strict else '>='} {low:g}, got {v!r}", *keys)
        return float(v)

    def lognormal(self, *keys: str, max_key: str = "max") -> LogNormal:
        return LogNormal(self.number(*keys, "median"), self.number(*keys, "sigma", strict=False),
                         self.number(*keys, max_key))


def load_agentic_stats(path: str | Path = DEFAULT_STATS_PATH) -> tuple[dict[str, Any],
                                                                        AgenticModel]:
    """The ``published`` figures and the sampled model of an agentic stats YAML."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"agentic coding statistics not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise WorkloadError(f"invalid YAML: {e}", file=p,
                            line=None if mark is None else mark.line + 1) from None
    if not isinstance(doc, dict):
        raise WorkloadError("must be a mapping with 'published' and 'model'", file=p)
    r = _Reader(p, doc, yaml_key_lines(text))
    published = r.get("published")
    if not isinstance(published, dict):
        raise r.error("must be a mapping", "published")
    turns = r.number("model", "turns_mean", low=1.0, strict=False)
    batches = r.number("model", "tool_batches_mean", strict=False)
    bsize = r.number("model", "batch_size_mean", low=1.0, strict=False)
    tools = r.get("model", "tools")
    if not isinstance(tools, dict) or not tools:
        raise r.error("must be a non-empty mapping of tool kinds", "model", "tools")
    kinds = tuple(str(k) for k in tools)
    if HUMAN in kinds:
        raise r.error(f"'{HUMAN}' is the kind of a user's turn, not a tool", "model", "tools")
    tmax = r.number("model", "tool_time_max_s")
    share = np.asarray([r.number("model", "tools", k, "share") for k in kinds])
    times = tuple(LogNormal(r.number("model", "tools", k, "median_s"),
                            r.number("model", "tools", k, "sigma", strict=False), tmax)
                  for k in kinds)
    return published, AgenticModel(
        turns_mean=turns, tool_batches_mean=batches, batch_size_mean=bsize,
        completion=r.lognormal("model", "completion_tokens"),
        returns=r.lognormal("model", "return_tokens"),
        first_prompt=r.lognormal("model", "first_prompt_tokens"),
        think=r.lognormal("model", "think_time_s"),
        tool_kinds=kinds, tool_share=share / share.sum(), tool_time=times,
    )


def _geometric(rng: np.random.Generator, mean: float, low: int) -> int:
    """A geometric count on ``low, low+1, …`` with the given mean (>= low)."""
    extra = mean - low
    if extra <= 0:
        return low
    return low + int(rng.geometric(1.0 / (1.0 + extra))) - 1


class AgenticSource(ScriptSource):
    """Coding-agent session scripts sampled from ``data/agentic_coding.yaml``.

    Sessions are drawn fresh (not from a pool), so a seed gives its own sessions; ``draw`` uses
    only ``rng``. Tool kinds are the YAML's ``tools`` keys; a user's turn is :data:`HUMAN`.
    """

    def __init__(self, stats_path: str | Path | None = None) -> None:
        self.stats_path = Path(stats_path) if stats_path is not None else DEFAULT_STATS_PATH
        self.published, self.model = load_agentic_stats(self.stats_path)

    def _tokens(self, law: LogNormal, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(1, np.rint(law.sample(rng, n))).astype(int)

    def tool_times(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` single tool calls: (kind index into ``model.tool_kinds``, duration s)."""
        m = self.model
        kinds = rng.choice(len(m.tool_kinds), size=n, p=m.tool_share)
        dur = np.empty(n)
        for k, law in enumerate(m.tool_time):
            idx = np.flatnonzero(kinds == k)
            dur[idx] = law.sample(rng, idx.size)
        return kinds, dur

    def session(self, rng: np.random.Generator) -> AugRequest:
        m = self.model
        turns = _geometric(rng, m.turns_mean, 1)
        prompt = int(self._tokens(m.first_prompt, rng, 1)[0])
        batches = [_geometric(rng, m.tool_batches_mean, 0) for _ in range(turns)]
        nb = sum(batches)
        sizes = np.asarray([_geometric(rng, m.batch_size_mean, 1) for _ in range(nb)], dtype=int)
        gen = self._tokens(m.completion, rng, nb + turns)
        kinds, dur = self.tool_times(rng, int(sizes.sum()))
        ret = self._tokens(m.returns, rng, int(sizes.sum()))
        think = m.think.sample(rng, turns - 1)
        msg = self._tokens(m.returns, rng, turns - 1)
        segs: list[Segment] = []
        j = c = 0  # next batch, next call
        for t, nt in enumerate(batches):
            for _ in range(nt):
                k = sizes[j]
                longest = c + int(np.argmax(dur[c:c + k]))
                segs.append(Segment(int(gen[len(segs)]), ToolCall(
                    m.tool_kinds[kinds[longest]], float(dur[longest]), int(ret[c:c + k].sum()))))
                j += 1
                c += k
            if t + 1 < turns:
                segs.append(Segment(int(gen[len(segs)]), ToolCall(HUMAN, float(think[t]),
                                                                  int(msg[t]))))
            else:
                segs.append(Segment(int(gen[len(segs)])))
        meta = {"source": "agentic_coding", "generator": "agentic", "turns": turns,
                "calls_per_turn": tuple(b + 1 for b in batches),
                "batch_sizes": tuple(int(x) for x in sizes)}
        return AugRequest(rid="agentic", arrival_s=0.0, prompt_tokens=prompt,
                          segments=tuple(segs), aug_type="other",
                          metadata=MappingProxyType(meta))

    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        return [self.session(rng) for _ in range(n)]


def describe(requests: list[AugRequest]) -> dict[str, float]:
    """The statistics ``data/agentic_coding.yaml`` publishes, measured on session scripts (as
    served: after any :meth:`AugRequest.fit_context` cut). Per-call figures weight every LLM
    call equally, as the sources' totals do; "new input" is what an ideal prefix cache would
    not hold: the whole first prompt, then the previous completion plus what came back."""
    turns = calls = batches = tool_calls = 0
    prompts: list[int] = []
    new: list[int] = []
    gens: list[int] = []
    durations: list[float] = []
    think: list[float] = []
    for r in requests:
        sizes = r.metadata.get("batch_sizes", ())
        ctx, fresh, nb = r.prompt_tokens, r.prompt_tokens, 0
        turns += 1
        for seg in r.segments:
            prompts.append(ctx)
            new.append(fresh)
            gens.append(seg.gen_tokens)
            calls += 1
            ctx += seg.gen_tokens
            fresh = seg.gen_tokens
            if seg.call is None:
                continue
            ctx += seg.call.return_tokens
            fresh += seg.call.return_tokens
            if seg.call.kind == HUMAN:
                turns += 1
                think.append(seg.call.duration_s)
            else:
                tool_calls += int(sizes[nb]) if nb < len(sizes) else 1
                nb += 1
                durations.append(seg.call.duration_s)
        batches += nb
    p, g = np.asarray(prompts, dtype=float), np.asarray(gens, dtype=float)
    d, h = np.asarray(durations), np.asarray(think)
    return {
        "sessions": float(len(requests)),
        "turns_per_session": turns / len(requests),
        "llm_calls_per_turn": calls / turns,
        "tool_batches_per_turn": batches / turns,
        "tool_calls_per_turn": tool_calls / turns,
        "tool_calls_per_batch": tool_calls / max(1, batches),
        "completion_tokens_per_call": float(g.mean()),
        "output_tokens_median": float(np.median(g)),
        "prompt_tokens_per_call": float(p.mean()),
        "prompt_tokens_max": float(p.max()),
        "append_tokens_median": float(np.median(new)),
        "ideal_cached_share": 1.0 - float(np.sum(new)) / float(p.sum()),
        "batch_time_p50_s": float(np.median(d)) if d.size else float("nan"),
        "think_time_p50_s": float(np.median(h)) if h.size else float("nan"),
        "think_time_p90_s": float(np.quantile(h, 0.9)) if h.size else float("nan"),
        "cut_sessions_share": float(np.mean(["truncated_to" in r.metadata for r in requests])),
    }
