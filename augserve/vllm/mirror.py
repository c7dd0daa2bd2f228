"""The few lines that mirror vLLM 0.32's scheduler internals, in one pinned, tested place.

augserve never forks vLLM's ``schedule()``; it only predicts, before vLLM's loop runs, what that
loop will do, so that a policy's ``fits(view)`` and the admission room agree with vLLM:

* :func:`room_after_running` — the token budget vLLM's *running* loop leaves for the waiting
  loop (vLLM 0.32 ``Scheduler.schedule``, the ``while req_index < len(self.running)`` loop:
  async placeholders, spec tokens, the ``max_model_len - 1`` cap), assuming no preemption;
* :func:`prefix_hit` / :func:`blocks_to_admit` / :func:`free_for_admit` — what
  ``KVCacheManager.get_computed_blocks`` and ``allocate_slots`` take from the free pool to admit
  a request (hit blocks that are free count against it; the watermark while others run).

These depend on private vLLM details, so the module is pinned: :data:`VLLM_VERSION` is the
version they were read from and tested against (``tests/test_vllm_engine.py`` checks
:func:`room_after_running` against what vLLM scheduled, step by step), and
:func:`check_version` warns when another version is loaded.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: the vLLM release these mirrors were read from and are tested against
VLLM_VERSION = "0.32.0"


def check_version(version: str) -> bool:
    """Whether ``version`` (``vllm.__version__``) is the pinned release; warns if not."""
    base = version.split("+")[0]
    if base != VLLM_VERSION:
        log.warning("augserve's scheduler mirrors were written for vLLM %s but vLLM %s is "
                    "loaded: admission estimates may disagree with vLLM's loop (see "
                    "augserve/vllm/mirror.py)", VLLM_VERSION, version)
        return False
    return True


def room_after_running(sched: Any, budget: int) -> int:
    """Tokens of ``budget`` that vLLM's running loop leaves for admissions (no preemption)."""
    room = budget
    for r in sched.running:
        if room <= 0:
            break
        if (r.num_output_placeholders > 0 and r.num_computed_tokens + 2
                - r.num_output_placeholders >= r.num_prompt_tokens + r.max_tokens):
            continue  # async scheduling: its last token is already in flight
        n = r.num_tokens_with_spec + r.num_output_placeholders - r.num_computed_tokens
        n = min(n, room, sched.max_model_len - r.num_computed_tokens - 1)
        if n > 0:
            room -= n
    return room


def free_for_admit(sched: Any) -> int:
    """Free blocks a new request may take: vLLM keeps a watermark while others run."""
    kvm = sched.kv_cache_manager
    free = kvm.block_pool.get_num_free_blocks()
    return free - (kvm.watermark_blocks if sched.running else 0)


def prefix_hit(sched: Any, request: Any) -> tuple[int, int]:
    """(tokens the prefix cache would give ``request``, how many of those blocks are free)."""
    if request.num_computed_tokens > 0:
        return request.num_computed_tokens, 0
    blocks, hit, _ = sched.kv_cache_manager.get_computed_blocks(request)
    groups = blocks.blocks if hit else ()
    free_hits = sum(1 for b in groups[0] if b.ref_cnt == 0) if groups else 0
    return int(hit), int(free_hits)


def blocks_to_admit(sched: Any, request: Any, hit: tuple[int, int], room: int) -> int:
    """Blocks ``allocate_slots`` takes from the free pool to admit ``request`` with ``room``
    tokens, given its :func:`prefix_hit`."""
    bs = sched.block_size
    tokens, free_hits = hit
    chunk = max(1, min(request.num_tokens - tokens, max(room, 1)))
    have = -(-tokens // bs)
    return -(-(tokens + chunk) // bs) - have + free_hits
