"""Engine workloads from converted tool-use datasets (``predictors.data``).

:func:`rows_to_requests` turns :class:`~predictors.schema.ToolUseRow` rows into
:class:`~augserve.request.AugRequest` scripts; :class:`DatasetSource` is a script pool over one
or more datasets; :func:`make_dataset_workload` is the Hydra factory (``conf/workload/*.yaml``)::

    python -m predictors.workload --sources tooltalk --rate 2 --duration 600 --out trace.jsonl

Rules (units: tokens, seconds):

* ``prompt_tokens = row.prompt_tokens + row.tools_schema_tokens``: the offered tools' schemas are
  sent with the prompt, so the engine prefills them too (``metadata["prompt_text_tokens"]`` keeps
  the text's own count). They come first, so rows offering the same tools share that prefix:
  ``prefix`` is ``("schema:<dataset>:<tool names key>:<schema tokens>", schema tokens)`` (the
  rows keep no schema text, so same names and length stand for the same schemas) then
  ``("row:<dataset>:<row id>", prompt tokens)`` (:mod:`augserve.prefix`).
* The call structure (names, order, count) is the row's. Call ``k``'s ``ToolCall.kind`` is the
  tool name.
* Unknown lengths (``None``) are drawn from the empirical distribution of the *known* values of
  the same kind in the same dataset: pre-call segments, final responses and tool returns are
  three separate pools. If that dataset has no known value of that kind (e.g. BFCL has no
  responses and no returns), a dataset that has some is picked uniformly among those given,
  then one of its values ("pooled", so a large dataset does not dominate); if there is none,
  the assumed constants ``default_segment_tokens`` / ``default_return_tokens`` ("default").
  ``metadata["filled"]`` maps each filled field (``segment_tokens``, ``response_tokens``,
  ``return_tokens``) to the rule used. Generated lengths below 1 are
  raised to 1 (the engine needs >= 1 token per segment).
* Tool durations: see :class:`ToolTimeModel`; ``metadata["tool_classes"]`` names the
  distribution of each call.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload import make_arrivals
from augserve.workload.base import ScriptSource
from augserve.workload.holdout import load_holdout, usable
from augserve.workload.sampled import SampledWorkload
from augserve.workload.trace_jsonl import write_trace
from predictors.data import DEFAULT_DATA_DIR, load_source
from predictors.schema import ConversionReport, ToolUseRow

#: Assumed generated length (tokens) when no dataset given has a known value of that kind (only
#: for a source without any known value, e.g. BFCL's final responses when BFCL is alone).
DEFAULT_SEGMENT_TOKENS = 100
#: Assumed tool-return length (tokens) when no dataset given has a known return length.
DEFAULT_RETURN_TOKENS = 100

#: The InferCept mixture's tool kinds (their durations are resampled from that data).
INFERCEPT_KINDS = ("math", "qa", "ve", "chatbot", "image", "tts")

_CALCULATOR = re.compile(
    r"^(math|algebra|arithmetic|geometry|calculator|calc)([._]|$)|^(calculate|compute)[._]",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ToolTimeModel:
    """Per-call tool durations (s) by tool class.

    * ``recorded``: the row's own measured durations (``meta["tool_s"]``, infercept_mix only)
      when ``use_recorded``.
    * ``empirical:<kind>``: for the InferCept kinds without a recorded duration, a uniform draw
      from the recorded durations of that kind in the rows given.
    * ``calculator`` (a converter's ``meta["tool_classes"]`` hint, e.g. BFCL's MathAPI, or a
      name like ``math.*``, ``calculate_*``, ``compute_*``): lognormal, median
      ``calc_median_s`` = 7.80e-5 s, log-sd ``calc_sigma`` = 0.425 -- the maximum-likelihood
      lognormal fit to the 268 nonzero calculator-call durations measured in InferCept's
      mixture (``merged_exp_uniform.json``, Math requests; SOURCE.md: mean 8e-5 s).
    * ``web_api`` (everything else: ToolBench/RapidAPI, API-Bank, ToolAlpaca, ToolTalk and BFCL
      functions): lognormal, median ``web_median_s`` = 0.734 s, log-sd ``web_sigma`` = 0.211 --
      the fit to the 144 nonzero Wikipedia-API (HTTP) call durations of the same file's QA
      requests (SOURCE.md: mean 0.71 s). Applying InferCept's measured HTTP API time to other
      datasets' APIs is an *assumption* (their tools were simulated or not timed); the spread
      of real third-party APIs is likely wider, so change ``web_sigma`` for a sensitivity study.

    Zero durations in the file (8 Math, 7 QA calls) are left out of the fits.
    """

    web_median_s: float = 0.734
    web_sigma: float = 0.211
    calc_median_s: float = 7.80e-5
    calc_sigma: float = 0.425
    use_recorded: bool = True

    def __post_init__(self) -> None:
        for name in ("web_median_s", "calc_median_s"):
            v = getattr(self, name)
            if not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive number of seconds, got {v}")
        for name in ("web_sigma", "calc_sigma"):
            v = getattr(self, name)
            if not v >= 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be >= 0, got {v}")

    def tool_class(self, name: str, source: str, hint: str | None = None) -> str:
        """The distribution a call of tool ``name`` is drawn from (not ``recorded``)."""
        if hint:
            return hint
        if source == "infercept_mix" and name in INFERCEPT_KINDS:
            return f"empirical:{name}"
        if _CALCULATOR.search(name):
            return "calculator"
        return "web_api"

    def draw(
        self, cls: str, rng: np.random.Generator,
        empirical: Mapping[str, np.ndarray] | None = None,
    ) -> float:
        """One duration (s) of tool class ``cls``."""
        if cls == "calculator":
            return float(self.calc_median_s * math.exp(self.calc_sigma * rng.standard_normal()))
        if cls == "web_api":
            return float(self.web_median_s * math.exp(self.web_sigma * rng.standard_normal()))
        if cls.startswith("empirical:"):
            pool = None if empirical is None else empirical.get(cls.split(":", 1)[1])
            if pool is None or len(pool) == 0:
                raise ValueError(f"no recorded durations for tool class {cls!r}")
            return float(pool[rng.integers(len(pool))])
        raise ValueError(f"unknown tool class {cls!r}")


@dataclass(frozen=True, slots=True)
class LengthPools:
    """Known lengths (tokens) per dataset, and recorded durations (s) per InferCept kind."""

    segment: Mapping[str, np.ndarray]  # pre-call segments
    response: Mapping[str, np.ndarray]  # final segments
    ret: Mapping[str, np.ndarray]  # tool returns
    tool_s: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Sequence[ToolUseRow]) -> LengthPools:
        seg: dict[str, list[int]] = {}
        resp: dict[str, list[int]] = {}
        ret: dict[str, list[int]] = {}
        dur: dict[str, list[float]] = {}
        for r in rows:
            seg.setdefault(r.source, []).extend(
                s for s in r.segment_tokens[:-1] if s is not None)
            resp.setdefault(r.source, [])
            if r.segment_tokens[-1] is not None:
                resp[r.source].append(r.segment_tokens[-1])
            ret.setdefault(r.source, []).extend(s for s in r.return_tokens if s is not None)
            for kind, t in zip(r.calls, r.meta.get("tool_s") or [], strict=False):
                dur.setdefault(kind, []).append(float(t))

        def arr(d: dict[str, list[Any]]) -> dict[str, np.ndarray]:
            return {k: np.asarray(v) for k, v in sorted(d.items())}

        return cls(arr(seg), arr(resp), arr(ret), arr(dur))


def _fill(
    pools: Mapping[str, np.ndarray], source: str, default: int, rng: np.random.Generator
) -> tuple[int, str]:
    """One length for a missing field, and the rule that gave it."""
    own = pools.get(source)
    if own is not None and len(own):
        return int(own[rng.integers(len(own))]), "dataset"
    others = [v for _, v in sorted(pools.items()) if len(v)]
    if others:  # a dataset uniformly, then one of its values: no dataset dominates by size
        pick = others[rng.integers(len(others))]
        return int(pick[rng.integers(len(pick))]), "pooled"
    return int(default), "default"


def _names_key(tools: Sequence[str]) -> str:
    """A short stable key for a set of offered tools (their schemas are the same text)."""
    return hashlib.sha256("\n".join(tools).encode()).hexdigest()[:16]


def rows_to_requests(
    rows: Sequence[ToolUseRow],
    tool_time: ToolTimeModel,
    rng: np.random.Generator,
    default_segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
    default_return_tokens: int = DEFAULT_RETURN_TOKENS,
    pools: LengthPools | None = None,
) -> list[AugRequest]:
    """One engine script per row (``arrival_s = 0``, ``rid`` = the row's rid).

    ``pools`` (default: built from ``rows``) supplies the empirical lengths for missing values
    and the recorded InferCept durations. Draws happen in row order, so ``rng``'s state fixes
    the result.
    """
    if default_segment_tokens < 1 or default_return_tokens < 0:
        raise ValueError("default_segment_tokens must be >= 1 and default_return_tokens >= 0")
    pools = LengthPools.from_rows(rows) if pools is None else pools
    out: list[AugRequest] = []
    for r in rows:
        r.validate()
        filled: dict[str, str] = {}
        n = r.num_calls
        recorded = list(r.meta.get("tool_s") or []) if tool_time.use_recorded else []
        hints = list(r.meta.get("tool_classes") or [])
        segs: list[Segment] = []
        classes: list[str] = []
        for k in range(n + 1):
            g = r.segment_tokens[k]
            if g is None:
                last = k == n
                g, rule = _fill(pools.response if last else pools.segment, r.source,
                                default_segment_tokens, rng)
                filled["response_tokens" if last else "segment_tokens"] = rule
            if k == n:
                segs.append(Segment(max(1, int(g))))
                break
            ret = r.return_tokens[k]
            if ret is None:
                ret, rule = _fill(pools.ret, r.source, default_return_tokens, rng)
                filled["return_tokens"] = rule
            name = r.calls[k]
            if k < len(recorded) and recorded[k] is not None:
                cls, dur = "recorded", float(recorded[k])
            else:
                cls = tool_time.tool_class(name, r.source, hints[k] if k < len(hints) else None)
                dur = tool_time.draw(cls, rng, pools.tool_s)
            classes.append(cls)
            segs.append(Segment(max(1, int(g)), ToolCall(name, dur, max(0, int(ret)))))
        meta = {
            "source": r.source, "tools": tuple(r.tools),
            "tools_schema_tokens": r.tools_schema_tokens, "script_rid": r.rid,
            "aug_type": r.aug_type, "group": r.group, "prompt_text_tokens": r.prompt_tokens,
            "tool_classes": tuple(classes), "filled": filled,
        }
        prompt = r.prompt_tokens + r.tools_schema_tokens
        prefix: list[tuple[str, int]] = []
        if r.tools_schema_tokens:
            # the rows hold no schema text: its tools' names and token count stand for it
            prefix.append((f"schema:{r.source}:{_names_key(r.tools)}:{r.tools_schema_tokens}",
                           r.tools_schema_tokens))
        if prompt > r.tools_schema_tokens:
            prefix.append((f"row:{r.source}:{r.rid}", prompt))
        out.append(AugRequest(
            rid=r.rid, arrival_s=0.0, prompt_tokens=prompt,
            segments=tuple(segs), aug_type=r.aug_type, prompt_text=r.prompt_text,
            metadata=MappingProxyType(meta), prefix=tuple(prefix),
        ))
    return out


@functools.lru_cache(maxsize=16)
def _converted(name: str, data_dir: str) -> tuple[list[ToolUseRow], ConversionReport]:
    return load_source(name, data_dir)


class DatasetSource(ScriptSource):
    """A script pool over datasets, converted once and drawn with replacement.

    The pool is built once with ``np.random.default_rng(seed)`` (fills and tool durations are
    fixed per row, like a recorded trace); the workload's rng then only picks scripts. ``mix``:
    ``"source"`` picks a dataset uniformly, then a row of it (every dataset gets an equal share
    whatever its size); ``"rows"`` picks uniformly among all rows. With ``max_model_len`` rows
    whose prompt (with tool schemas) does not fit are left out (``dropped[source]``). With
    ``holdout`` (held-out row ids per dataset, :mod:`augserve.workload.holdout`) rows a predictor
    artifact was fit on are left out too (``held_back[source]``).
    """

    def __init__(
        self,
        sources: Sequence[str] | str,
        data_dir: str | Path = DEFAULT_DATA_DIR,
        seed: int = 0,
        tool_time: ToolTimeModel | None = None,
        max_model_len: int | None = None,
        mix: str = "source",
        default_segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
        default_return_tokens: int = DEFAULT_RETURN_TOKENS,
        holdout: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        names = [sources] if isinstance(sources, str) else [str(s) for s in sources]
        if not names:
            raise ValueError("sources must name at least one dataset")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate dataset in sources: {names}")
        if mix not in ("source", "rows"):
            raise ValueError(f"mix must be 'source' or 'rows', got {mix!r}")
        self.sources = names
        self.mix = mix
        self.tool_time = ToolTimeModel() if tool_time is None else tool_time
        root = str(Path(data_dir).resolve())
        self.reports: dict[str, ConversionReport] = {}
        all_rows: list[ToolUseRow] = []
        for name in names:
            rows, rep = _converted(name, root)
            self.reports[name] = rep
            all_rows.extend(rows)
        pools = LengthPools.from_rows(all_rows)
        self.dropped: dict[str, int] = {}
        kept = []
        self.held_back: dict[str, int] = {}  # rows a predictor was fit on (not drawn)
        for r in all_rows:
            if not usable(r.source, r.rid, holdout):
                self.held_back[r.source] = self.held_back.get(r.source, 0) + 1
            elif max_model_len is not None and r.prompt_tokens + r.tools_schema_tokens \
                    >= max_model_len:
                self.dropped[r.source] = self.dropped.get(r.source, 0) + 1
            else:
                kept.append(r)
        scripts = rows_to_requests(kept, self.tool_time, np.random.default_rng(seed),
                                   default_segment_tokens, default_return_tokens, pools)
        self.pool: dict[str, list[AugRequest]] = {n: [] for n in names}
        for s in scripts:
            self.pool[s.metadata["source"]].append(s)
        empty = [n for n, p in self.pool.items() if not p]
        if empty:
            raise ValueError(f"no usable rows in dataset(s) {empty} (max_model_len="
                             f"{max_model_len}, dropped={self.dropped}, fit on by the "
                             f"predictor={self.held_back})")
        self.scripts: list[AugRequest] = [s for n in names for s in self.pool[n]]

    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        if self.mix == "rows":
            return [self.scripts[i] for i in rng.integers(0, len(self.scripts), size=n)]
        src = rng.integers(0, len(self.sources), size=n)
        out = []
        for s in src:
            pool = self.pool[self.sources[s]]
            out.append(pool[rng.integers(len(pool))])
        return out


def make_dataset_workload(
    sources: Sequence[str] | str,
    rate: float | None = 1.0,
    duration_s: float = 600.0,
    data_dir: str | Path = "../shared/data",
    burstiness: float = 1.0,
    arrivals: str = "poisson",
    azure_path: str | Path | None = None,
    max_model_len: int | None = None,
    seed_scripts: int = 0,
    max_requests: int | None = None,
    mix: str = "source",
    holdout: str | Path | None = None,
) -> SampledWorkload:
    """Scripts from the named datasets at ``rate`` req/s over ``duration_s`` s.

    ``data_dir`` is relative to the working directory. ``seed_scripts`` seeds the script pool
    (fills, tool durations); the run seed drives arrivals and which scripts are drawn.
    ``holdout``: a predictor artifact directory; only the rows its split held out are drawn.
    """
    held = load_holdout(holdout) if holdout is not None else None
    src = DatasetSource(sources, data_dir, seed_scripts, max_model_len=max_model_len, mix=mix,
                        holdout=held)
    return SampledWorkload(src, make_arrivals(arrivals, rate, burstiness, azure_path),
                           duration_s, max_model_len=max_model_len, max_requests=max_requests)


def main(argv: Sequence[str] | None = None) -> None:
    """Write a JSONL trace (``augserve.workload.trace_jsonl``) drawn from datasets."""
    ap = argparse.ArgumentParser(prog="python -m predictors.workload", description=main.__doc__)
    ap.add_argument("--sources", nargs="+", required=True, help="dataset names")
    ap.add_argument("--rate", type=float, default=1.0, help="requests/s")
    ap.add_argument("--duration", type=float, default=600.0, help="arrival window (s)")
    ap.add_argument("--out", type=Path, required=True, help="trace .jsonl to write")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--seed", type=int, default=0, help="arrivals and script draws")
    ap.add_argument("--seed-scripts", type=int, default=0, help="fills and tool durations")
    ap.add_argument("--arrivals", default="poisson", choices=("poisson", "gamma", "azure"))
    ap.add_argument("--burstiness", type=float, default=1.0)
    ap.add_argument("--azure-path", default=None)
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--mix", default="source", choices=("source", "rows"))
    a = ap.parse_args(argv)
    sources = [s for item in a.sources for s in item.split(",") if s]
    wl = make_dataset_workload(sources, a.rate, a.duration, a.data_dir, a.burstiness, a.arrivals,
                               a.azure_path, a.max_model_len, a.seed_scripts, mix=a.mix)
    reqs = wl.requests(a.seed)
    write_trace(a.out, reqs)
    print(f"wrote {len(reqs)} requests from {', '.join(sources)} to {a.out}")


if __name__ == "__main__":
    main()
