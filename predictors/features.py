"""One feature builder for training (:class:`ToolUseRow`) and serving (``RequestView``).

Both paths go through :class:`FeatureInput`, then :func:`build_matrix`, so training and serving
features cannot drift. The layout is fixed by a :class:`FeatureSpec` (JSON, saved in the
artifact): numeric prompt/tool features, source and aug_type one-hots over a stored vocabulary,
hashed word (and optionally char) n-grams of the prompt text, and runtime features for
re-prediction (all zero / NaN at arrival). Output: a dense ``float32`` matrix, one row per input.
Deterministic: the hashing is stateless, nothing is fitted.

A row is its *arrival columns* (:func:`arrival_key` names what they depend on) and its
*runtime columns* (:data:`RUNTIME`, :func:`set_runtime_columns`): a server builds the arrival
columns once per request and fills in the runtime columns at every re-prediction
(:class:`predictors.artifact.LGBMPredictor`), with the values :func:`build_matrix` gives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from predictors.schema import ToolUseRow
from predictors.text_hash import TextHasher

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

        Unknown segment/return lengths before ``at_call`` count as 0 tokens. ``prompt_tokens``
        is the text's and the tool schemas' (what the engine is sent).
        """
        k = int(at_call)
        if not 0 <= k <= row.num_calls:
            raise ValueError(f"{row.source}/{row.rid}: at_call={k} outside 0..{row.num_calls}")
        # a known segment of 0 tokens is played as 1 (the engine generates >= 1 a segment)
        gen = sum(max(1, int(s)) for s in row.segment_tokens[:k] if s is not None)
        last_ret = int(row.return_tokens[k - 1] or 0) if k > 0 else 0
        elapsed = 0.0
        if k > 0:
            ts = tool_seconds(row)
            elapsed = float(sum(ts[:k])) if ts is not None else math.nan
        return cls(
            prompt_text=row.prompt_text or "",
            # what the engine is sent and a view shows: the text and the tools' schemas
            prompt_tokens=int(row.prompt_tokens) + int(row.tools_schema_tokens or 0),
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
        """From an ``augserve.contract.RequestView`` (duck-typed; augserve is not imported).

        ``calls_done`` counts *returned* calls (a call in progress is not counted), matching
        :meth:`from_row`.
        """
        return cls(*arrival_inputs(view), *runtime_inputs(view))


ArrivalInputs = tuple[str, int, str, str, tuple[str, ...], int]


def arrival_inputs(view: Any) -> ArrivalInputs:
    """The first six fields of a ``RequestView``'s :class:`FeatureInput`, the ones its
    arrival columns depend on (``FeatureInput(*inputs)`` is the request at arrival)."""
    meta: Mapping[str, Any] = view.metadata or {}
    return (view.prompt_text or "", int(view.prompt_tokens), str(meta.get("source", "other")),
            view.aug_type or "other", tuple(meta.get("tools", ()) or ()),
            int(meta.get("tools_schema_tokens", 0) or 0))


def arrival_key(spec: FeatureSpec, inputs: ArrivalInputs) -> tuple:
    """A compact key with which the arrival columns are the same: the text as far as the
    columns read it (its clipped form and its length), and the other five inputs."""
    text = inputs[0]
    return (_clip_text(text, spec.text_chars), len(text), *inputs[1:])


def runtime_inputs(view: Any) -> tuple[int, int, int, float]:
    """(generated tokens, returned calls, last return tokens, elapsed tool s) of a view."""
    rets = view.observed_return_tokens
    return (int(view.generated_tokens), len(rets), int(rets[-1]) if rets else 0,
            float(sum(view.observed_tool_s)))


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


_HASHERS: dict[tuple[str, int, int], TextHasher] = {}


def _hasher(kind: str, n: int, ngrams: int = 1) -> TextHasher:
    key = (kind, n, ngrams)
    h = _HASHERS.get(key)
    if h is None:
        h = _HASHERS[key] = (TextHasher(n, "word", (1, ngrams)) if kind == "word"
                             else TextHasher(n, "char_wb", (3, 4)))
    return h


def _clip_text(text: str, n: int) -> str:
    if n <= 0 or len(text) <= n:
        return text
    h = n // 2
    return text[:h] + " " + text[-(n - h):]


def _columns(spec: FeatureSpec) -> tuple[int, int, int]:
    """First column of the source one-hot, the runtime block and the text block."""
    c_src = len(NUMERIC)
    c_rt = c_src + len(spec.sources) + 1 + len(spec.aug_types) + 1
    return c_src, c_rt, c_rt + len(RUNTIME)


def runtime_column(spec: FeatureSpec) -> int:
    """Index of the first runtime column (:data:`RUNTIME`, in order)."""
    return _columns(spec)[1]


def _numeric(num: np.ndarray) -> np.ndarray:
    """log1p of the numeric inputs ``[n, 9]`` (NUMERIC's four, then :func:`runtime_inputs`'
    four and the mean tool time); unknown (NaN) tool times stay NaN (``maximum`` propagates
    NaN; trees route them, linear models -> 0)."""
    return np.log1p(np.maximum(num, 0.0))


def _runtime_into(X: np.ndarray, c_rt: int, num: np.ndarray, logs: np.ndarray) -> None:
    block = logs[:, 4:9]  # log1p of generated, (calls), last return, elapsed, mean tool time
    block[:, 1] = num[:, 5]  # the call count as it is
    X[:, c_rt:c_rt + 5] = block


def _runtime_row(generated: int, calls: int, last_return: int, elapsed: float
                 ) -> tuple[float, ...]:
    return (generated, calls, last_return, elapsed, elapsed / calls if calls > 0 else 0.0)


def set_runtime_columns(spec: FeatureSpec, X: np.ndarray,
                        runtime: Sequence[tuple[int, int, int, float]]) -> None:
    """Write the runtime columns of ``X`` (rows of :func:`build_matrix`) from
    :func:`runtime_inputs` tuples, with the values :func:`build_matrix` computes."""
    num = np.zeros((len(runtime), 9), dtype=np.float64)
    for i, r in enumerate(runtime):
        num[i, 4:] = _runtime_row(*r)
    _runtime_into(X, runtime_column(spec), num, _numeric(num))


def build_matrix(spec: FeatureSpec, inputs: Sequence[FeatureInput]) -> np.ndarray:
    """Dense float32 feature matrix ``(len(inputs), spec.n_features)``."""
    n = len(inputs)
    X = np.zeros((n, spec.n_features), dtype=np.float32)
    if n == 0:
        return X
    src_pos = {s: i for i, s in enumerate(spec.sources)}
    aug_pos = {a: i for i, a in enumerate(spec.aug_types)}
    n_src, n_aug = len(spec.sources) + 1, len(spec.aug_types) + 1
    c_src, c_rt, c_txt = _columns(spec)
    c_aug = c_src + n_src
    num = np.empty((n, len(NUMERIC) + len(RUNTIME)), dtype=np.float64)
    rows = np.arange(n)
    si = np.empty(n, dtype=np.int64)
    ai = np.empty(n, dtype=np.int64)
    for i, f in enumerate(inputs):
        si[i] = src_pos.get(f.source, n_src - 1)
        ai[i] = aug_pos.get(f.aug_type, n_aug - 1)
        num[i] = (f.prompt_tokens, len(f.prompt_text), len(f.tools), f.tools_schema_tokens,
                  *_runtime_row(f.generated_tokens, f.calls_done, f.last_return_tokens,
                                f.elapsed_tool_s))
    logs = _numeric(num)
    X[:, 0] = logs[:, 0]
    X[:, 1] = logs[:, 1]
    X[:, 2] = num[:, 2]
    X[:, 3] = logs[:, 3]
    X[rows, c_src + si] = 1.0
    X[rows, c_aug + ai] = 1.0
    _runtime_into(X, c_rt, num, logs)
    texts = [_clip_text(f.prompt_text, spec.text_chars) for f in inputs]
    if spec.hash_word:
        X[:, c_txt:c_txt + spec.hash_word] = (
            _hasher("word", spec.hash_word, spec.word_ngrams).transform(texts))
    if spec.hash_char:
        c = c_txt + spec.hash_word
        X[:, c:c + spec.hash_char] = _hasher("char", spec.hash_char).transform(texts)
    return X


def rows_matrix(spec: FeatureSpec, rows: Iterable[ToolUseRow], at_call: int = 0) -> np.ndarray:
    """Arrival (``at_call=0``) features of training rows."""
    return build_matrix(spec, [FeatureInput.from_row(r, at_call) for r in rows])

