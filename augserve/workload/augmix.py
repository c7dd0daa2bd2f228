"""Built-in ``augmix`` generator: the six InferCept augmentation types from published statistics.

The statistics live in ``data/augmix.yaml`` (written by ``experiments/derive_augmix_stats.py``
from the InferCept/LAMPS mixture file), so a run needs no external data. Each component has a
share of requests, a pmf of calls per request, the share of requests whose last call is
trailing, and empirical quantiles of prompt tokens, generated tokens per segment, tool time (s)
and returned tokens per call. A script is sampled component first, then each quantity
independently by inverse-CDF interpolation between the stored quantiles (correlations within a
request, e.g. TTS/Image's alternation of tool calls and human think time, are not kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from augserve.request import AugRequest, Segment, ToolCall
from augserve.workload.base import ScriptSource
from augserve.workload.errors import WorkloadError

#: ``data/augmix.yaml`` at the repository root (the package is used from a source checkout).
DEFAULT_STATS_PATH = Path(__file__).resolve().parents[2] / "data" / "augmix.yaml"

_QFIELDS = ("prompt_tokens", "gen_tokens_call", "tool_time_s", "return_tokens")


@dataclass(frozen=True)
class Component:
    """One request population of the mixture (see ``data/augmix.yaml``)."""

    name: str
    aug_type: str
    content_type: str
    share: float
    calls: np.ndarray  # possible numbers of calls per request
    calls_p: np.ndarray  # their probabilities
    trailing_p: float  # probability that the last call is trailing (followed by 1 token)
    q: dict[str, np.ndarray]  # quantiles per field at the file's quantile_levels

    def expected(self, field: str, levels: np.ndarray) -> float:
        """Mean of ``field`` under the piecewise-linear inverse CDF (before rounding)."""
        q = self.q[field]
        return float(np.sum(np.diff(levels) * (q[1:] + q[:-1]) / 2))


def _quantiles(path: Path, where: str, field: str, raw: Any, n: int) -> np.ndarray:
    if (not isinstance(raw, list) or len(raw) != n
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)):
        raise WorkloadError(f"must be a list of {n} numbers", file=path, field=field, where=where)
    q = np.asarray(raw, dtype=float)
    if np.any(np.diff(q) < 0) or q[0] < 0 or not np.all(np.isfinite(q)):
        raise WorkloadError("quantiles must be finite, >= 0 and non-decreasing", file=path,
                            field=field, where=where)
    return q


def load_augmix_stats(path: str | Path, labels: str = "source") -> tuple[np.ndarray,
                                                                         list[Component]]:
    """Quantile levels and components of an augmix stats YAML; bad content is a WorkloadError.

    ``labels="content"`` labels each component by ``content_type`` instead of ``aug_type``.
    """
    if labels not in ("source", "content"):
        raise ValueError(f"labels must be 'source' or 'content', got {labels!r}")
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise WorkloadError(f"invalid YAML: {e}", file=p,
                            line=None if mark is None else mark.line + 1) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("components"), dict):
        raise WorkloadError("missing mapping", file=p, field="components")
    lv = doc.get("quantile_levels")
    if (not isinstance(lv, list) or len(lv) < 2 or lv[0] != 0 or lv[-1] != 1
            or any(b <= a for a, b in zip(lv, lv[1:], strict=False))):
        raise WorkloadError("must be increasing from 0 to 1", file=p, field="quantile_levels")
    levels = np.asarray(lv, dtype=float)
    comps: list[Component] = []
    for name, c in doc["components"].items():
        where = f"component '{name}'"
        if not isinstance(c, dict):
            raise WorkloadError("must be a mapping", file=p, field=str(name))
        for f in ("aug_type", "share", "calls_pmf", "trailing_call_share", *_QFIELDS):
            if f not in c:
                raise WorkloadError("missing", file=p, field=f, where=where)
        pmf = c["calls_pmf"]
        if not isinstance(pmf, dict) or not pmf:
            raise WorkloadError("must be a non-empty mapping", file=p, field="calls_pmf",
                                where=where)
        try:
            calls = np.asarray([int(k) for k in pmf], dtype=int)
            cp = np.asarray([float(v) for v in pmf.values()])
        except (TypeError, ValueError):
            raise WorkloadError("must map integers to probabilities", file=p,
                                field="calls_pmf", where=where) from None
        if np.any(calls < 0) or np.any(cp < 0) or cp.sum() <= 0:
            raise WorkloadError("must map call counts >= 0 to probabilities >= 0", file=p,
                                field="calls_pmf", where=where)
        share, tp = c["share"], c["trailing_call_share"]
        if not isinstance(share, int | float) or share < 0:
            raise WorkloadError("must be a number >= 0", file=p, field="share", where=where)
        if not isinstance(tp, int | float) or not 0 <= tp <= 1:
            raise WorkloadError("must be in [0, 1]", file=p, field="trailing_call_share",
                                where=where)
        q = {f: _quantiles(p, where, f, c[f], len(levels)) for f in _QFIELDS}
        if tp < 1:
            q["gen_tokens_final"] = _quantiles(p, where, "gen_tokens_final",
                                               c.get("gen_tokens_final"), len(levels))
        aug = str(c["aug_type"])
        content = str(c.get("content_type", aug))
        comps.append(Component(str(name), content if labels == "content" else aug, content,
                               float(share), calls, cp / cp.sum(), float(tp), q))
    if not comps or sum(c.share for c in comps) <= 0:
        raise WorkloadError("no component with a positive share", file=p, field="components")
    return levels, comps


class AugMixSource(ScriptSource):
    """Synthetic InferCept-mixture scripts sampled from ``data/augmix.yaml``.

    ``labels``: ``"source"`` (default) labels as the InferCept data's SOURCE.md does (the
    ``ve_intkey`` component, ALFWorld episodes under integer keys, is ``chatbot``);
    ``"content"`` labels it ``ve``. The tool kind of every call is the request's label.
    """

    def __init__(self, stats_path: str | Path | None = None, labels: str = "source") -> None:
        self.stats_path = Path(stats_path) if stats_path is not None else DEFAULT_STATS_PATH
        if not self.stats_path.is_file():
            raise FileNotFoundError(f"augmix statistics not found: {self.stats_path}")
        self.levels, self.components = load_augmix_stats(self.stats_path, labels)
        shares = np.asarray([c.share for c in self.components])
        self.shares = shares / shares.sum()

    def _q(self, rng: np.random.Generator, q: np.ndarray, n: int) -> np.ndarray:
        return np.interp(rng.random(n), self.levels, q)

    def draw(self, rng: np.random.Generator, n: int) -> list[AugRequest]:
        which = rng.choice(len(self.components), size=n, p=self.shares)
        out: list[AugRequest | None] = [None] * n
        for ci, c in enumerate(self.components):
            idx = np.flatnonzero(which == ci)
            m = idx.size
            if m == 0:
                continue
            k = rng.choice(c.calls, size=m, p=c.calls_p)
            trailing = (rng.random(m) < c.trailing_p) & (k > 0)
            prompt = np.maximum(1, np.rint(self._q(rng, c.q["prompt_tokens"], m))).astype(int)
            total = int(k.sum())
            gen = np.maximum(1, np.rint(self._q(rng, c.q["gen_tokens_call"], total))).astype(int)
            dur = self._q(rng, c.q["tool_time_s"], total)
            ret = np.maximum(0, np.rint(self._q(rng, c.q["return_tokens"], total))).astype(int)
            if "gen_tokens_final" in c.q:
                fin = np.maximum(1, np.rint(self._q(rng, c.q["gen_tokens_final"], m))).astype(int)
            else:
                fin = np.ones(m, dtype=int)
            j = 0
            for r in range(m):
                segs = [Segment(int(gen[j + s]), ToolCall(c.aug_type, float(dur[j + s]),
                                                           int(ret[j + s])))
                        for s in range(int(k[r]))]
                j += int(k[r])
                segs.append(Segment(1 if trailing[r] else int(fin[r])))
                meta = {"source": "infercept_mix", "generator": "augmix", "component": c.name,
                        "content_type": c.content_type,
                        "trailing_call": bool(trailing[r])}
                out[idx[r]] = AugRequest(rid=c.name, arrival_s=0.0, prompt_tokens=int(prompt[r]),
                                         segments=tuple(segs), aug_type=c.aug_type,
                                         metadata=MappingProxyType(meta))
        return out  # type: ignore[return-value]
