"""Content keys for prefix caching: which KV blocks two requests share.

Neither engine needs real text to know that two prompts start alike: a request carries
``AugRequest.prefix``, levels ``(key, tokens)`` with increasing ``tokens``, each key naming the
content of the prompt's first ``tokens`` tokens. Workloads set them from where a prompt comes
from:

* a dataset row (``predictors.workload``): ``("schema:<dataset>:<hash of the tool names>",
  schema tokens)`` for the offered tools' schemas, which come first, then
  ``("row:<dataset>:<row id>", prompt tokens)`` for the whole prompt;
* an InferCept script (``infercept_json``): ``("infercept:<script key>", prompt tokens)``,
  since its harness draws scripts with replacement;
* a JSONL trace: its ``prefix`` field; synthetic scripts (augmix) have none.

Everything after the last level (the rest of the prompt, generated and returned tokens) is the
request's own. Block ``i`` (tokens ``[i*bs, (i+1)*bs)``) is *shared* when it lies wholly within
a level; its key is ``(key of the shortest such level, i)``. The key of a level names all its
tokens, so equal block keys mean equal token prefixes, V1's hash-chain rule. The simulator's
pool (:mod:`augserve.engine.kv`) hits on these keys; the live engine derives its prompt token
ids from them (:func:`prefix_token_ids`), so the same requests share the same prefixes in both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

Prefix = tuple[tuple[str, int], ...]


def check_prefix(prefix: Sequence[Sequence[object]], prompt_tokens: int) -> Prefix:
    """``prefix`` as a tuple of ``(key, tokens)``; raises ValueError naming what is wrong."""
    out: list[tuple[str, int]] = []
    last = 0
    for j, level in enumerate(prefix):
        if len(level) != 2:
            raise ValueError(f"prefix level {j}: expected [key, tokens], got {level!r}")
        key, n = level
        if not isinstance(key, str) or not key:
            raise ValueError(f"prefix level {j}: key must be a non-empty string, got {key!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n <= last:
            raise ValueError(f"prefix level {j}: tokens must be an integer > {last} (levels "
                             f"grow), got {n!r}")
        if n > prompt_tokens:
            raise ValueError(f"prefix level {j}: tokens={n} > prompt_tokens={prompt_tokens}")
        out.append((key, n))
        last = n
    return tuple(out)


def block_keys(prefix: Prefix, block_size: int) -> tuple[tuple[str, int], ...]:
    """Keys of the shared full blocks of a prompt with levels ``prefix``, from block 0."""
    if not prefix:
        return ()
    keys = []
    j = 0
    for i in range(prefix[-1][1] // block_size):
        end = (i + 1) * block_size
        while prefix[j][1] < end:
            j += 1
        keys.append((prefix[j][0], i))
    return tuple(keys)


def _level_rng(key: str) -> np.random.Generator:
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def prefix_token_ids(prefix: Prefix, vocab: int, low: int = 3) -> list[int]:
    """Token ids in ``[low, vocab)`` of the first ``prefix[-1][1]`` prompt tokens: level
    ``j``'s tokens ``[len_{j-1}, len_j)`` drawn from a generator seeded by its key, so prompts
    with a common level share those ids (the live engine's prompts)."""
    ids: list[int] = []
    for key, n in prefix:
        ids.extend(_level_rng(key).integers(low, vocab, n - len(ids)).tolist())
    return ids
