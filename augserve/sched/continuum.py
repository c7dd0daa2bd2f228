"""Continuum (Li et al., arXiv 2511.02230): pin a turn's KV for a time-to-live across its tool
call; program-level FCFS.

Sources: the released code, ``Hanchenli/vllm-continuum`` at 3761e57 (read through its fork
``Weili-0234/vllm-continuum``; "O" below) and the extended copy vendored in
``Afterglow231/MARS_preview`` at 7e649f3 (``vllm-continuum/``; "M"). Files:
``vllm/v1/core/sched/scheduler.py`` (``_free_blocks``, ``pin_request``,
``unpin_requests_regular``, ``pop_running_request_based_on_last_step``),
``vllm/v1/core/estimate_with_func.py`` (``ToolCallEstimator``) and
``vllm/v1/core/sched/request_queue.py`` (``ContinuumRequestQueue``). The paper's body was not
available to us; where we cite its rule it is through M's docstring that cites its Eq. (2).

**Pin** (``on_intercept``): a turn that ends in a tool call keeps its KV with a time-to-live,
a :class:`~augserve.contract.KVDecision` ``preserve`` with ``ttl_s`` (the simulator frees it at
the TTL, or earlier under memory pressure, the pin with the latest end first:
:mod:`augserve.engine.tool_kv`). A TTL of at most 0.01 s is no pin (``length_of_pin > 0.01``,
M ``scheduler.py``); then the KV is freed at the call as vLLM frees it (``vllm`` mode: the
prefix cache may keep it). Two TTL rules, both as released:

* ``ttl: fixed`` (O and M, ``ToolCallEstimator.set_up_pin``, ``FIXED_THRESHOLD_CONTINUUM =
  2.0`` s): pin for exactly 2.0 s when the tool's mean observed time is at most 2.0 s (no
  history: mean 0, so a cold start pins); otherwise no pin. The mean is the plain running mean
  of every sample of that tool name (``update_func_call_exec_time``).
* ``ttl: dynamic`` (M only, ``calc_ttl_continuum_dynamic``, the MARS authors' reconstruction of
  the paper's Eq. (2)): τ maximising ``P(τ)·(T·η + reload) − τ`` over τ ∈ {0} ∪ the observed
  samples, ``P`` their empirical CDF; ties to the smallest τ; no pin when the best reward is
  ≤ 0. ``reload`` = 0.0002 s per token of the turn's context (``estimate_prefill_reload_s``'s
  default; the MARS scripts set no other); ``T`` = mean of the last 200 waits of preempted
  requests from preemption to re-admission (``_continuum_queue_delay_s``, 0 without samples);
  ``η`` = −corr(turn index, turns left) over finished programs (``_continuum_eta``; 1.0 with
  fewer than 2 points or no variance). Cold start (K = 100): 2.0 s while at most 100 samples
  exist in all; then the tool's own samples once it has more than 100, else all pooled.

**Order** (``ContinuumRequestQueue.peek_request``): waiting requests by their program's first
arrival (every turn keeps its program's first-turn time, ``job_id_first_entry_time``, which the
released queue never clears: a program that comes back after all its turns left keeps its
place), ties in arrival order. The map here is bounded: past ``PROGRAM_MEMORY`` programs the
one seen least recently is forgotten (a long-running server cannot grow it without end). Its first
pass (turns of programs holding a pin first) is the engine's: a pinned request whose tool
returns rejoins the running set ahead of the policy's queue (vLLM's requests that hold KV).
Static budget: 2048 by default (vLLM V1's A100 server default); the ``continuum`` rows run at
the budget tuned per profile (``data/tuned/``, ``experiments/tune.py``).

**Differences from the released code, and why.** (1) A tool's time samples here are the tool's
duration; the released code measures the whole gap between a turn's finish and the next turn's
arrival (client and network time included), which a simulated client does not have. (2) Under
memory pressure the engine frees pins before it preempts any running request (our rule, as the
issue states it; without the paper's body we could not check it there); the released scheduler
frees a pin only when at most one request runs and otherwise preempts the running request of the
latest program. (3) The released code holds a pin past its TTL while the program's next turn
waits; here a turn's next segment begins when its tool returns, so it never waits while its pin
lives. (4) The tool name is the call's kind (``view.current_tool``), not parsed from the output
text. The live vLLM engine plays every call in ``vllm`` mode (no pin: stock vLLM has no TTL
hook)."""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

from augserve.contract import EngineInfo, EngineState, KVDecision, KVMode, RequestView
from augserve.sched.keyed import KeyedPolicy

FIXED_TTL_S = 2.0  # FIXED_THRESHOLD_CONTINUUM (O and M estimate_with_func.py)
MIN_PIN_S = 0.01  # length_of_pin > 0.01 (M scheduler.py _free_blocks)
RECORD_THRESHOLD_K = 100  # record_threshold_k (M calc_ttl_continuum_dynamic)
RELOAD_S_PER_TOKEN = 2e-4  # estimate_prefill_reload_s default (M)
QUEUE_DELAY_SAMPLES = 200  # deque(maxlen=200) of preemption waits (M scheduler.py)
PROGRAM_MEMORY = 65536  # programs whose first arrival is remembered (ours: the released map grows)


class _Corr:
    """Pearson correlation from running sums (x, y pairs)."""

    __slots__ = ("n", "sx", "sy", "sxx", "syy", "sxy")

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.syy += y * y
        self.sxy += x * y

    def corr(self) -> float | None:
        if self.n < 2:
            return None
        vx = self.n * self.sxx - self.sx**2
        vy = self.n * self.syy - self.sy**2
        if vx <= 0 or vy <= 0:
            return None
        c = (self.n * self.sxy - self.sx * self.sy) / math.sqrt(vx * vy)
        return max(-1.0, min(1.0, c))


class ContinuumPolicy(KeyedPolicy):
    """Continuum's TTL pinning and program-level FCFS (see the module docstring)."""

    name = "continuum"

    def __init__(self, ttl: str = "fixed", max_num_batched_tokens: int = 2048,
                 fixed_ttl_s: float = FIXED_TTL_S,
                 reload_s_per_token: float = RELOAD_S_PER_TOKEN,
                 record_threshold: int = RECORD_THRESHOLD_K, name: str | None = None) -> None:
        if ttl not in ("fixed", "dynamic"):
            raise ValueError(f"ttl={ttl!r}: expected 'fixed' or 'dynamic'")
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= 1")
        if fixed_ttl_s < 0 or reload_s_per_token < 0 or record_threshold < 0:
            raise ValueError("fixed_ttl_s, reload_s_per_token and record_threshold must be >= 0")
        self.ttl_rule = ttl
        self.budget = int(max_num_batched_tokens)
        self.fixed_ttl_s = float(fixed_ttl_s)
        self.reload_s_per_token = float(reload_s_per_token)
        self.k = int(record_threshold)
        if name:
            self.name = name

    def reset(self, info: EngineInfo) -> None:
        super().reset(info)
        self._program_arrival: OrderedDict[str, float] = OrderedDict()
        self._sum: dict[str, float] = {}  # tool -> sum of its durations (s)
        self._count: dict[str, int] = {}  # tool -> its samples
        self._samples: dict[str, list[float]] = {}  # tool -> sorted durations (dynamic)
        self._all: list[float] = []  # every duration, sorted (dynamic)
        self._n_all = 0
        self._preempted_at: dict[str, float] = {}
        self._queue_delay: deque[float] = deque(maxlen=QUEUE_DELAY_SAMPLES)
        self._turns = _Corr()
        self._now = 0.0

    # ------------------------------------------------------------------ order
    def priority(self, view: RequestView, state: EngineState) -> tuple:
        return (self._program_arrival[view.session_id],)

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        self._now = state.now_s
        sid = view.session_id
        if sid in self._program_arrival:
            self._program_arrival.move_to_end(sid)  # seen lately: forgotten last
        else:
            self._program_arrival[sid] = view.arrival_s
            if len(self._program_arrival) > PROGRAM_MEMORY:  # queued keys are already fixed
                self._program_arrival.popitem(last=False)
        if view.preempted:
            self._preempted_at[view.rid] = view.wait_since_s
        super().on_enqueue(view, state)

    def candidates(self, state: EngineState, fits: Callable[[RequestView], bool]
                   ) -> Iterator[RequestView]:
        self._now = state.now_s
        return super().candidates(state, fits)

    def on_admit(self, view: RequestView) -> None:
        t0 = self._preempted_at.pop(view.rid, None)
        if t0 is not None:  # admissions happen at the clock of the candidates() call
            self._queue_delay.append(max(0.0, self._now - t0))
        super().on_admit(view)

    def on_leave(self, view: RequestView) -> None:
        turns = view.calls_done + 1  # its segments: turns of the program
        for i in range(turns):
            self._turns.add(float(i), float(turns - 1 - i))
        self._preempted_at.pop(view.rid, None)
        super().on_leave(view)

    def token_budget(self, state: EngineState) -> int:
        return self.budget

    # ------------------------------------------------------------------ tool statistics
    def on_tool_return(self, view: RequestView, duration_s: float) -> None:
        kind = view.current_tool or view.aug_type
        d = max(0.0, float(duration_s))
        self._sum[kind] = self._sum.get(kind, 0.0) + d
        self._count[kind] = self._count.get(kind, 0) + 1
        self._n_all += 1
        if self.ttl_rule == "dynamic":  # the empirical CDFs (unbounded, as released)
            bisect.insort(self._samples.setdefault(kind, []), d)
            bisect.insort(self._all, d)

    def mean_tool_s(self, kind: str) -> float:
        """Running mean of the tool's durations (s); 0 with no history (a cold start pins)."""
        n = self._count.get(kind, 0)
        return self._sum[kind] / n if n else 0.0

    def queue_delay_s(self) -> float:
        q = self._queue_delay
        return sum(q) / len(q) if q else 0.0

    def eta(self) -> float:
        c = self._turns.corr()
        return 1.0 if c is None else -c

    def ttl_s(self, view: RequestView) -> float:
        """The time-to-live of the pin for the call ``view`` just made (s; 0: no pin)."""
        kind = view.current_tool or view.aug_type
        if self.ttl_rule == "fixed":
            return self.fixed_ttl_s if self.mean_tool_s(kind) <= self.fixed_ttl_s else 0.0
        if self._n_all <= self.k:
            return self.fixed_ttl_s
        own = self._samples.get(kind, [])
        records = own if len(own) > self.k else self._all
        base = self.queue_delay_s() * self.eta() + self.reload_s_per_token * view.context_tokens
        if base <= 0:
            return 0.0
        return best_ttl(records, base)

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode | KVDecision:
        ttl = self.ttl_s(view)
        if ttl > MIN_PIN_S:
            return KVDecision(KVMode.PRESERVE, ttl)
        return KVMode.VLLM


def best_ttl(sorted_samples: list[float], base_s: float) -> float:
    """argmax over τ ∈ {0} ∪ samples of ``P(τ)·base_s − τ`` (``P``: the samples' empirical CDF;
    ties to the smallest τ); 0 when no τ has a positive reward. Seconds."""
    n = len(sorted_samples)
    if n == 0:
        return 0.0
    best_tau, best_r = 0.0, 0.0  # τ = 0: P(0)·base − 0, counted below with the zeros
    i = 0
    while i < n:
        tau = sorted_samples[i]
        j = bisect.bisect_right(sorted_samples, tau, i)  # samples <= τ
        r = j / n * base_s - tau
        if r > best_r:
            best_tau, best_r = tau, r
        i = j
    return best_tau if best_r > 0 else 0.0
