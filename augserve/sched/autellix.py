"""Autellix PLAS: Program-Level Attained Service, least-served program first, anti-starvation.

What PLAS is. Autellix (Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as
General Programs", arXiv 2502.13965) schedules an agent's LLM calls by the service its whole
*program* has attained so far, not by the call's own. Here a program is ``view.session_id``
(an agent run or chat session; the request itself when it belongs to none) and a call is one
segment of a request: from entering the waiting queue to its tool call (``on_intercept``) or
its end (``on_leave``).

* Process table (paper §4.2.1, Alg. 1 ``Update_Process_Table``): a program's attained service
  is folded in only when one of its calls completes. PLAS defines it as the cumulative service
  of all completed calls (§4.2.1); Alg. 1 writes ``service = max(service, c.service +
  c.model_time)``, which is that sum for sequential calls (and ATLAS's critical path for
  parallel ones). We fold the sum; MARS_preview (``Scheduler._free_request``) uses the max rule.
* Queues (§4.2.2): K levels by program service; a call enters the level whose range holds its
  program's service at arrival (not level 0 as in MLFQ), FCFS within a level.
* Anti-starvation (Alg. 1): a queued call moves to level 0 when ``(W_p + W_c) / (S_p + S_c) >=
  beta`` (W waiting, S service time; p = program, c = call); only ``W_c`` and ``S_c`` are then
  reset, so a program's threads tend to be promoted together.

The paper gives no K, thresholds, quanta or beta. Every constant below is the one of the only
public code that has them, MARS_preview's ``autellix`` mode (github Afterglow231/MARS_preview
@7e649f3; "an Autellix baseline implemented with the PLAS scheduling policy", its README):

* ``thresholds=(2048, 8192, 32768)`` tokens, 4 levels (service < 2048 -> 0, < 8192 -> 1,
  < 32768 -> 2, else 3): ``Scheduler.__init__`` ``_autellix_service_thresholds`` and
  ``_autellix_level_for_service`` (vllm-continuum/vllm/v1/core/sched/scheduler.py:149, 520).
* ``quanta=(2048, 1024, 512, 256)`` tokens per level: ``_autellix_level_quanta``
  (scheduler.py:150), used by ``_autellix_quantum_for_level`` / ``_autellix_on_scheduled``.
  Kept and validated, but **not modelled**: MARS caps a request's tokens per step at its
  remaining quantum and demotes it one level when a step uses the whole quantum with work
  left (in practice only in chunked prefill). The policy contract has no per-request chunk
  cap and a policy cannot preempt or re-rank a running request, so neither the cap nor the
  demotion while running exists here; a call's level is decided each time it enters the
  queue instead (a preempted call keeps its level, as MARS's ``_autellix_q_idx`` does).
* ``beta=2.0``: ``_autellix_beta`` (scheduler.py:151), applied in
  ``_autellix_apply_antistarvation`` with MARS's "no promotion while the denominator is 0"
  and only to calls above level 0. On promotion MARS (and Alg. 1) resets the call's wait and
  service, so the tokens computed before the promotion are not folded into the program.
* Order within a level: a deque per level, ``request_queue.py::AutellixRequestQueue``
  (``num_queues=4``): new and promoted calls are appended (FIFO by queue entry time,
  ``view.wait_since_s``), a preempted (recomputed) call is prepended (``prepend_request``:
  ``appendleft``), so the most recently preempted goes first. Key: ``(level, 0, -entry)`` if
  preempted else ``(level, 1, entry)``.
* Program state is dropped at the program's end (MARS pops both totals at ``is_last_step``):
  here when its last live request leaves the engine, so memory stays bounded.
* KV at a tool call: ``KVMode.VLLM``; MARS's autellix mode frees the call's KV when the call
  ends (``_free_blocks``; TTL pinning is only for continuum/infercept) and the prefix cache may
  keep it.
* ``max_num_batched_tokens=2048``: the default static budget, vLLM V1's OpenAI-server default
  on an A100 (vLLM 0.32 ``EngineArgs.get_batch_defaults``, vllm/engine/arg_utils.py), which
  MARS runs on; the ``autellix`` row runs at the budget tuned per profile (``data/tuned/``).

Units: where paper and code differ we follow MARS's constants (the paper has none) and the
paper's units where MARS counts what this contract cannot observe.

* Attained service is in **tokens** (MARS: scheduled tokens, prefill + decode, cache hits not
  counted, recompute counted again): a call's tokens are ``view.context_tokens`` at its end
  minus ``view.computed_tokens`` at its admission. A call cut by preemption also adds its
  context at re-entry minus its computed tokens at admission (exact when it was decoding; an
  upper bound when cut mid-prefill, since its KV is already freed when the policy sees it).
* Waiting and running times are in **seconds** (the paper's Alg. 1); MARS counts both in
  scheduled tokens ("tokens the engine processed for others"), which needs per-step,
  per-request scheduling that a policy here does not see. ``W`` counts time in the waiting
  queue only, ``S`` time from admission to the call's end or preemption.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterator, Sequence

from augserve.contract import EngineInfo, EngineState, KVMode, RequestView
from augserve.sched.keyed import KeyedPolicy


class _Program:
    """A program's process-table entry: totals over its finished calls."""

    __slots__ = ("service", "wait_s", "run_s", "live")

    def __init__(self) -> None:
        self.service = 0  # attained service (tokens)
        self.wait_s = 0.0  # W_p (s)
        self.run_s = 0.0  # S_p (s)
        self.live = 0  # requests of the program in the engine


class _Call:
    """The current call of one request."""

    __slots__ = ("prog", "view", "level", "preempted", "entry_s", "wait_s", "run_s", "tokens",
                 "running", "admit_s", "admit_computed")

    def __init__(self, prog: _Program, view: RequestView) -> None:
        self.prog = prog
        self.view = view  # held to re-push it on promotion (the heap holds it anyway)
        self.level = 0
        self.preempted = False  # its queue entry is a preemption's
        self.entry_s = 0.0  # start of the current wait: queue entry or promotion time (s)
        self.wait_s = 0.0  # W_c over closed wait intervals (s)
        self.run_s = 0.0  # S_c over closed run intervals (s)
        self.tokens = 0  # tokens computed over closed run intervals
        self.running = False
        self.admit_s = 0.0
        self.admit_computed = 0  # tokens already cached at admission (not service)


def _positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    out = tuple(values)
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"{name}={list(out)} must be a non-empty list of positive ints (tokens)")
    return out


class AutellixPolicy(KeyedPolicy):
    """PLAS: level from the program's attained service at queue entry, FIFO within a level,
    preempted first, promotion to level 0 when the program's wait/service ratio reaches beta.

    ``thresholds``/``quanta`` in tokens, ``beta`` dimensionless (``math.inf`` turns
    anti-starvation off), ``max_num_batched_tokens`` the static step budget (tokens).
    """

    name = "autellix"

    def __init__(
        self,
        thresholds: Sequence[int] = (2048, 8192, 32768),
        quanta: Sequence[int] = (2048, 1024, 512, 256),
        beta: float = 2.0,
        max_num_batched_tokens: int = 2048,
    ) -> None:
        self.thresholds = _positive_ints("thresholds", thresholds)
        if any(a >= b for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise ValueError(f"thresholds={list(self.thresholds)} must be strictly increasing")
        self.quanta = _positive_ints("quanta", quanta)
        if len(self.quanta) != len(self.thresholds) + 1:
            raise ValueError(f"quanta={list(self.quanta)} needs one quantum per level: "
                             f"{len(self.thresholds) + 1} for {len(self.thresholds)} thresholds")
        if not float(beta) > 0:  # (also rejects NaN)
            raise ValueError(f"beta={beta} must be > 0")
        self.beta = float(beta)
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        self.budget = int(max_num_batched_tokens)

    # -- queries (tests, traces) ---------------------------------------------------------------
    def level_for_service(self, tokens: int) -> int:
        """Level of a program that attained ``tokens``: the number of thresholds <= it."""
        return bisect.bisect_right(self.thresholds, tokens)

    def level_of(self, rid: str) -> int | None:
        """Level of ``rid``'s current call (None if the request is unknown)."""
        c = self._calls.get(rid)
        return None if c is None else c.level

    def service_of(self, pid: str) -> int:
        """Attained service (tokens) of program ``pid``; 0 once it has ended."""
        p = self._programs.get(pid)
        return 0 if p is None else p.service

    # -- the contract --------------------------------------------------------------------------
    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        self._programs: dict[str, _Program] = {}
        self._calls: dict[str, _Call] = {}  # rid -> its current call, until it leaves
        self._promo: list[tuple[float, int, str]] = []  # (promotion time s, entry, rid)
        self._now = 0.0  # last clock seen: on_admit / on_leave get no state

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        c = self._calls[view.rid]
        if c.preempted:  # prepended: the most recently preempted is at the head of its level
            return (c.level, 0, -c.entry_s)
        return (c.level, 1, c.entry_s)

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        self._now = now = state.now_s
        rid = view.rid
        c = self._calls.get(rid)
        if c is None:
            pid = view.session_id
            prog = self._programs.get(pid)
            if prog is None:
                prog = self._programs[pid] = _Program()
            prog.live += 1
            c = self._calls[rid] = _Call(prog, view)
        c.view = view
        prog = c.prog
        if view.preempted:  # the same call resumes later; what it computed so far counts
            if c.running:
                self._close_run(c, view, now)
            c.preempted = True  # keeps its level (MARS keeps _autellix_q_idx)
        else:  # a new call: its level from the program's service now
            if c.running:  # (not with KVMode.VLLM: a call ends at on_intercept)
                self._end_call(c, view, now)
            c.level = self.level_for_service(prog.service)
            c.preempted = False
            c.wait_s = c.run_s = 0.0
            c.tokens = 0
        c.entry_s = view.wait_since_s
        super().on_enqueue(view, state)
        # (W_p + W_c) / (S_p + S_c) only grows while waiting: it reaches beta at a known time
        service_s = prog.run_s + c.run_s
        if c.level > 0 and service_s > 0 and not math.isinf(self.beta):
            due = c.entry_s + max(0.0, self.beta * service_s - prog.wait_s - c.wait_s)
            heapq.heappush(self._promo, (due, self._live[rid], rid))

    def on_admit(self, view: RequestView) -> None:
        c = self._calls.get(view.rid)
        if c is not None:
            now = self._now
            c.wait_s += max(0.0, now - c.entry_s)
            c.running = True
            c.admit_s = now
            c.admit_computed = view.computed_tokens
        super().on_admit(view)

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        self._now = state.now_s
        c = self._calls.get(view.rid)
        if c is not None:
            self._end_call(c, view, state.now_s)
        return KVMode.VLLM

    def on_leave(self, view: RequestView) -> None:
        c = self._calls.pop(view.rid, None)
        if c is not None:
            prog = c.prog
            prog.live -= 1
            if prog.live <= 0:  # the program has ended: forget it
                self._programs.pop(view.session_id, None)
            elif c.running:  # its last call finished: other requests of the program see it
                self._end_call(c, view, self._now)
        super().on_leave(view)

    def on_step(self, state: EngineState) -> None:
        self._now = state.now_s

    def candidates(
        self, state: EngineState, fits: Callable[[RequestView], bool]
    ) -> Iterator[RequestView]:
        self._now = state.now_s
        self._promote_due(state.now_s)
        return super().candidates(state, fits)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    # -- internals -----------------------------------------------------------------------------
    def _close_run(self, c: _Call, view: RequestView, now: float) -> None:
        c.run_s += max(0.0, now - c.admit_s)
        c.tokens += max(0, view.context_tokens - c.admit_computed)
        c.running = False

    def _end_call(self, c: _Call, view: RequestView, now: float) -> None:
        """Fold the finished call into its program's totals (Alg. 1 ``Update_Process_Table``)."""
        if c.running:
            self._close_run(c, view, now)
        prog = c.prog
        prog.service += c.tokens
        prog.wait_s += c.wait_s
        prog.run_s += c.run_s
        c.wait_s = c.run_s = 0.0
        c.tokens = 0

    def _promote_due(self, now: float) -> None:
        """Move every call whose promotion time has come to the tail of level 0."""
        promo = self._promo
        live = self._live
        if len(promo) > 2 * len(live) + 64:  # entries of admitted/left calls pile up
            self._promo = promo = [e for e in promo if live.get(e[2]) == e[1]]
            heapq.heapify(promo)
        while promo and promo[0][0] <= now:
            due, entry, rid = heapq.heappop(promo)
            if live.get(rid) != entry:  # admitted, left or re-entered since
                continue
            c = self._calls[rid]
            # Alg. 1 / MARS: level 0 with the call's wait and service reset; program kept
            c.level = 0
            c.preempted = False
            c.entry_s = due  # as if re-queued exactly when the ratio reached beta
            c.wait_s = c.run_s = 0.0
            c.tokens = 0
            self._entries += 1
            live[rid] = self._entries
            heapq.heappush(self._heap, ((0, 1, due), self._first_seen[rid], self._entries,
                                        c.view))
