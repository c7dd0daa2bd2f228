"""One feature builder for training (:class:`ToolUseRow`) and serving (``RequestView``).

Both paths go through :class:`FeatureInput`, then :func:`build_matrix`, so training and serving
features cannot drift. The layout is fixed by a :class:`FeatureSpec` (JSON, saved in the
artifact): numeric prompt/tool features, source and aug_type one-hots over a stored vocabulary,
hashed word (and optionally char) n-grams of the prompt text, and runtime features for
re-prediction (all zero / NaN at arrival). Output: a dense ``float32`` matrix, one row per input.
Deterministic: the hashing is stateless, nothing is fitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from predictors.schema import ToolUseRow

SPEC_VERSION = 1

#: default vocabularies (unknown values map to the trailing "other" column)
SOURCES: tuple[str, ...] = (
    "toolbench_cot", "api_bank", "toolalpaca", "tooltalk", "bfcl", "infercept_mix",
)
AUG_TYPES: tuple[str, ...] = ("math", "qa", "ve", "chatbot", "image", "tts", "other")


@dataclass(frozen=True, slots=True)
class FeatureInput:
    """What a predictor may know about a request. Lengths in tokens, times in s.

    Runtime fields describe the state after ``calls_done`` tool calls have *returned*:
    ``generated_tokens`` so far, the last call's ``last_return_tokens`` and ``elapsed_tool_s``
    (sum of returned calls' durations; NaN when the dataset does not know them).
    """

    prompt_text: str
    prompt_tokens: int
    source: str
    aug_type: str
    tools: tuple[str, ...] = ()
    tools_schema_tokens: int = 0
    generated_tokens: int = 0
    calls_done: int = 0
    last_return_tokens: int = 0
    elapsed_tool_s: float = 0.0

    @classmethod
    def from_row(cls, row: ToolUseRow, at_call: int = 0) -> FeatureInput:
        """The request ``row`` after its first ``at_call`` calls returned (0 = arrival).

        Unknown segment/return lengths before ``at_call`` count as 0 tokens.
        """
        k = int(at_call)
        if not 0 <= k <= row.num_calls:
            raise ValueError(f"{row.source}/{row.rid}: at_call={k} outside 0..{row.num_calls}")
        gen = sum(int(s or 0) for s in row.segment_tokens[:k])
        last_ret = int(row.return_tokens[k - 1] or 0) if k > 0 else 0
        elapsed = 0.0
        if k > 0:
            ts = tool_seconds(row)
            elapsed = float(sum(ts[:k])) if ts is not None else math.nan
        return cls(
            prompt_text=row.prompt_text or "",
            prompt_tokens=int(row.prompt_tokens),
            source=row.source,
            aug_type=row.aug_type or "other",
            tools=tuple(row.tools),
            tools_schema_tokens=int(row.tools_schema_tokens or 0),
            generated_tokens=gen,
            calls_done=k,
            last_return_tokens=last_ret,
            elapsed_tool_s=elapsed,
        )

    def at_arrival(self) -> FeatureInput:
        """The same request with the runtime fields reset (what was known at arrival)."""
        return replace(self, generated_tokens=0, calls_done=0, last_return_tokens=0,
                       elapsed_tool_s=0.0)

    @classmethod
    def from_view(cls, view: Any) -> FeatureInput:
        """From an ``augserve.request.RequestView`` (duck-typed; augserve is not imported).

        ``calls_done`` counts *returned* calls (a call in progress is not counted), matching
        :meth:`from_row`.
        """
        meta: Mapping[str, Any] = view.metadata or {}
        rets = view.observed_return_tokens
        return cls(
            prompt_text=view.prompt_text or "",
            prompt_tokens=int(view.prompt_tokens),
            source=str(meta.get("source", "other")),
            aug_type=view.aug_type or "other",
            tools=tuple(meta.get("tools", ()) or ()),
            tools_schema_tokens=int(meta.get("tools_schema_tokens", 0) or 0),
            generated_tokens=int(view.generated_tokens),
            calls_done=len(rets),
            last_return_tokens=int(rets[-1]) if rets else 0,
            elapsed_tool_s=float(sum(view.observed_tool_s)),
        )


def tool_seconds(row: ToolUseRow) -> list[float] | None:
    """Per-call tool durations (s) if the dataset has them (``meta["tool_s"]``), else None."""
    ts = row.meta.get("tool_s") if row.meta else None
    if ts is None or len(ts) != row.num_calls or any(t is None for t in ts):
        return None
    return [float(t) for t in ts]


NUMERIC = ("log_prompt_tokens", "log_prompt_chars", "n_tools", "log_tools_schema_tokens")
RUNTIME = (
    "log_generated", "calls_done", "log_last_return", "log_elapsed_tool_s", "log_mean_tool_s",
)


@dataclass(slots=True)
class FeatureSpec:
    """The feature layout; JSON-serializable. ``hash_word``/``hash_char``: hashed columns."""

    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    aug_types: list[str] = field(default_factory=lambda: list(AUG_TYPES))
    hash_word: int = 256  # hashed word n-gram columns (0 = none)
    word_ngrams: int = 1  # word n-grams of length 1..word_ngrams
    hash_char: int = 0  # hashed char_wb 3-4 gram columns (0 = none)
    text_chars: int = 1000  # hash only the first and last text_chars/2 characters
    version: int = SPEC_VERSION

    # -- layout --------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        src = [f"src={s}" for s in self.sources] + ["src=other"]
        aug = [f"aug={a}" for a in self.aug_types] + ["aug=<unk>"]
        words = [f"w{i}" for i in range(self.hash_word)]
        chars = [f"c{i}" for i in range(self.hash_char)]
        return [*NUMERIC, *src, *aug, *RUNTIME, *words, *chars]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def source_slice(self) -> slice:
        start = len(NUMERIC)
        return slice(start, start + len(self.sources) + 1)

    def source_index(self, X: np.ndarray) -> np.ndarray:
        """Index into ``sources + ["other"]`` of each row of a built matrix."""
        return np.argmax(X[:, self.source_slice()], axis=1)

    # -- json ----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        d = json.loads(text)
        if d.get("version") != SPEC_VERSION:
            raise ValueError(f"feature spec version {d.get('version')} != {SPEC_VERSION}")
        return cls(**d)


_VEC_CACHE: dict[tuple[str, int, int], HashingVectorizer] = {}


def _vectorizer(kind: str, n: int, ngrams: int = 1) -> HashingVectorizer:
    key = (kind, n, ngrams)
    vec = _VEC_CACHE.get(key)
    if vec is None:
        if kind == "word":
            vec = HashingVectorizer(n_features=n, ngram_range=(1, ngrams), alternate_sign=False,
                                    norm="l2", dtype=np.float32)
        else:
            vec = HashingVectorizer(n_features=n, analyzer="char_wb", ngram_range=(3, 4),
                                    alternate_sign=False, norm="l2", dtype=np.float32)
        _VEC_CACHE[key] = vec
    return vec


def _clip_text(text: str, n: int) -> str:
    if n <= 0 or len(text) <= n:
        return text
    h = n // 2
    return text[:h] + " " + text[-(n - h):]


def build_matrix(spec: FeatureSpec, inputs: Sequence[FeatureInput]) -> np.ndarray:
    """Dense float32 feature matrix ``(len(inputs), spec.n_features)``."""
    n = len(inputs)
    X = np.zeros((n, spec.n_features), dtype=np.float32)
    if n == 0:
        return X
    src_pos = {s: i for i, s in enumerate(spec.sources)}
    aug_pos = {a: i for i, a in enumerate(spec.aug_types)}
    n_src, n_aug = len(spec.sources) + 1, len(spec.aug_types) + 1
    c_src = len(NUMERIC)
    c_aug = c_src + n_src
    c_rt = c_aug + n_aug
    c_txt = c_rt + len(RUNTIME)
    num = np.empty((n, len(NUMERIC) + len(RUNTIME)), dtype=np.float64)
    rows = np.arange(n)
    si = np.empty(n, dtype=np.int64)
    ai = np.empty(n, dtype=np.int64)
    for i, f in enumerate(inputs):
        si[i] = src_pos.get(f.source, n_src - 1)
        ai[i] = aug_pos.get(f.aug_type, n_aug - 1)
        mean_tool = f.elapsed_tool_s / f.calls_done if f.calls_done > 0 else 0.0
        num[i] = (
            f.prompt_tokens, len(f.prompt_text), len(f.tools), f.tools_schema_tokens,
            f.generated_tokens, f.calls_done, f.last_return_tokens, f.elapsed_tool_s, mean_tool,
        )
    logs = np.log1p(np.maximum(num, 0.0))
    logs[np.isnan(num)] = np.nan  # unknown tool times stay NaN (trees route them; linear -> 0)
    X[:, 0] = logs[:, 0]
    X[:, 1] = logs[:, 1]
    X[:, 2] = num[:, 2]
    X[:, 3] = logs[:, 3]
    X[rows, c_src + si] = 1.0
    X[rows, c_aug + ai] = 1.0
    X[:, c_rt] = logs[:, 4]
    X[:, c_rt + 1] = num[:, 5]
    X[:, c_rt + 2] = logs[:, 6]
    X[:, c_rt + 3] = logs[:, 7]
    X[:, c_rt + 4] = logs[:, 8]
    texts = [_clip_text(f.prompt_text, spec.text_chars) for f in inputs]
    if spec.hash_word:
        X[:, c_txt:c_txt + spec.hash_word] = (
            _vectorizer("word", spec.hash_word, spec.word_ngrams).transform(texts).toarray()
        )
    if spec.hash_char:
        c = c_txt + spec.hash_word
        X[:, c:c + spec.hash_char] = _vectorizer("char", spec.hash_char).transform(texts).toarray()
    return X


def rows_matrix(spec: FeatureSpec, rows: Iterable[ToolUseRow], at_call: int = 0) -> np.ndarray:
    """Arrival (``at_call=0``) features of training rows."""
    return build_matrix(spec, [FeatureInput.from_row(r, at_call) for r in rows])


def views_matrix(spec: FeatureSpec, views: Sequence[Any]) -> np.ndarray:
    """Serving-time features of ``RequestView`` objects (runtime fields included)."""
    return build_matrix(spec, [FeatureInput.from_view(v) for v in views])
