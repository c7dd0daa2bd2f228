"""Hashed n-gram counts of prompt text, the values of scikit-learn's ``HashingVectorizer``.

``HashingVectorizer.transform`` spends ~0.5-0.7 ms per call on parameter validation, sparse
matrix construction and normalization; a serving path that hashes one or two new prompts per
scheduling step pays that every step. :class:`TextHasher` uses the vectorizer's own analyzer
and scikit-learn's ``murmurhash3_32``, and reproduces what ``transform`` computes
(``alternate_sign=False``, ``norm="l2"``, float32): the column of a token is
``abs(murmurhash3_32(utf8 bytes, seed 0)) % n_features``, its value the token's count, each row
divided by its L2 norm in double precision and stored as float32. Tests check bit equality with
``HashingVectorizer.transform`` on the real datasets' prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32


class TextHasher:
    """``HashingVectorizer(n_features, analyzer, ngram_range, alternate_sign=False, norm="l2",
    dtype=float32)``, dense rows, without its per-call overhead."""

    def __init__(self, n_features: int, analyzer: str = "word",
                 ngram_range: tuple[int, int] = (1, 1)) -> None:
        if n_features < 1:
            raise ValueError(f"n_features={n_features} must be >= 1")
        self.n_features = int(n_features)
        #: the reference implementation (same settings); also the tokenizer
        self.vectorizer = HashingVectorizer(
            n_features=self.n_features, analyzer=analyzer, ngram_range=ngram_range,
            alternate_sign=False, norm="l2", dtype=np.float32)
        self._analyze = self.vectorizer.build_analyzer()

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Dense float32 ``(len(texts), n_features)``: what ``vectorizer.transform(texts)
        .toarray()`` returns."""
        n = self.n_features
        counts = np.zeros((len(texts), n), dtype=np.float64)
        for i, text in enumerate(texts):
            cols = [abs(murmurhash3_32(tok.encode("utf-8"), 0)) % n
                    for tok in self._analyze(text)]
            if cols:
                counts[i] = np.bincount(cols, minlength=n)
        norm = np.sqrt((counts * counts).sum(axis=1, keepdims=True))
        np.divide(counts, norm, out=counts, where=norm > 0)
        return counts.astype(np.float32)
