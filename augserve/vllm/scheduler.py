"""vLLM V1 scheduler subclasses that apply an augserve policy (needs vLLM 0.32).

Each ``schedule()``:

1. after ``Policy.on_step``, the policy's token budget (``Policy.token_budget``) becomes
   ``self.max_num_scheduled_tokens`` (clipped to ``max_num_batched_tokens``, and never below the
   number of decoding requests: decodes always run, as in
   :class:`~augserve.engine.sim.SimEngine`); both are called only on steps where prefill work
   could be scheduled;
2. vLLM's own loop runs unchanged over ``self.waiting``, which is a :class:`PolicyQueue`: every
   ``peek_request`` asks the policy for its next candidate, lazily, at the moment vLLM's waiting
   loop wants one, from ``Policy.candidates(state, fits)``, where ``fits(view)`` checks the
   request's next chunk (after prefix-cache hits) against the free blocks *now*. vLLM stops at
   the first request whose blocks do not fit (its head-of-line rule), so a policy that wants to
   pass over such a request yields a fitting one first, exactly as with the simulator.

The policy sees a read-only :class:`~augserve.contract.EngineState` (free/total blocks, running
and waiting counts, the last step's duration, prefill work of running requests) and
:class:`~augserve.contract.RequestView` objects adapted from vLLM ``Request`` objects
(:mod:`augserve.vllm.runtime`). Deployment settings come from ``--additional-config
'{"augserve": {...}}'`` (see :func:`augserve.vllm.deploy.make_policy`); the live engine
(:mod:`augserve.vllm.engine`) attaches its policy, clock and request runtimes with
:meth:`AugServeSchedulerMixin.attach` instead.

Use :class:`AugServeAsyncScheduler` for serving (async scheduling on) and
:class:`AugServeScheduler` for step-wise use.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import Request, RequestStatus

from augserve.contract import EngineInfo, EngineState, Reject, RequestView
from augserve.engine.trace import DecisionTrace
from augserve.sched.base import Policy
from augserve.vllm import init_cpu_features, mirror
from augserve.vllm.hints import HINT_VALIDATOR
from augserve.vllm.runtime import ServedRuntime, VRuntime

log = logging.getLogger(__name__)

init_cpu_features()

#: EngineInfo timing defaults when no calibrated profile is configured (s, s/token)
DEFAULT_STEP_FLOOR_S = 0.02
DEFAULT_PREFILL_S_PER_TOKEN = 2e-4

_BLOCKED = (
    RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR,
    RequestStatus.WAITING_FOR_REMOTE_KVS,
    RequestStatus.WAITING_FOR_STREAMING_REQ,
)


@dataclass(frozen=True, slots=True)
class StepStat:
    """What one scheduled step contained (for calibration). Clock in engine seconds."""

    step: int
    t_s: float  # engine clock when the step was scheduled
    n_tokens: int  # all scheduled tokens
    prefill_tokens: int
    num_decode: int  # requests decoding one token
    decode_ctx_sum: int  # Σ context (incl. the new token) over decoding requests
    prefill_attn: float  # Σ chunk·(ctx_before + chunk/2) over prefill chunks
    num_running: int
    num_waiting: int
    free_blocks: int


class PolicyQueue(RequestQueue):
    """vLLM's waiting queue, ordered by an augserve policy (see the module docstring).

    Outside a scheduling pass it is a plain set of waiting requests in arrival order; during
    one (``begin_pass`` .. ``end_pass``, around vLLM's ``schedule``) ``peek_request`` /
    ``pop_request`` / ``bool()`` walk the policy's candidates lazily.
    """

    def __init__(self, sched: AugServeSchedulerMixin) -> None:
        self._s = sched
        self._members: dict[str, Request] = {}
        self._in_pass = False
        self._gen: Iterator[Request | None] | None = None
        self._peeked: Request | None = None
        self._popped: dict[str, bool] = {}  # popped this pass -> policy told on_admit
        self._wait_tokens: dict[str, int] = {}  # rid -> prefill tokens it entered with
        self.waiting_prefill = 0  # their sum (EngineState.waiting_prefill_tokens)
        self._hit: dict[str, tuple[int, int]] = {}  # id -> (hit tokens, hit blocks to take)
        self.room = 0  # estimated token budget left for admissions in this pass

    # ------------------------------------------------------------------ pass control
    def begin_pass(self, room: int) -> None:
        self._in_pass = True
        self._gen = None
        self._peeked = None
        self._popped.clear()
        self._hit.clear()
        self.room = room

    def end_pass(self) -> dict[str, bool]:
        """Close the pass; returns {request id: policy already told on_admit} of pops."""
        self._in_pass = False
        self._gen = None
        self._peeked = None
        popped = dict(self._popped)
        self._popped.clear()
        return popped

    # ------------------------------------------------------------------ policy plumbing
    @property
    def policy(self) -> Policy:
        return self._s.aug_policy

    # the policy's queue calls, with the engine's prefill backlog kept beside them
    def enqueue(self, rt: VRuntime) -> Reject | None:
        v = rt.view
        tokens = max(v.context_tokens - v.computed_tokens, 0)
        self.waiting_prefill += tokens - self._wait_tokens.get(v.rid, 0)
        self._wait_tokens[v.rid] = tokens
        return self.policy.on_enqueue(v, self._s.engine_state())

    def admitted(self, rt: VRuntime) -> None:
        self.waiting_prefill -= self._wait_tokens.pop(rt.view.rid, 0)
        self.policy.on_admit(rt.view)

    def left(self, rt: VRuntime) -> None:
        self.waiting_prefill -= self._wait_tokens.pop(rt.view.rid, 0)
        self.policy.on_leave(rt.view)

    def _enter(self, request: Request) -> None:
        rid = request.request_id
        s = self._s
        rt = s.runtime(request)
        self._members[rid] = request
        if self._in_pass and rid in self._popped:
            # popped by vLLM's loop in this pass and put back (skipped): undo the pop; the
            # policy still holds it unless it was told of an admission
            if self._popped.pop(rid) and (rej := self.enqueue(rt)) is not None:
                self._turn_away(request, rt, rej)
            return
        rt.on_wait(s.now(), request.status == RequestStatus.PREEMPTED)
        rej = self.enqueue(rt)
        if rej is not None:
            self._turn_away(request, rt, rej)
            return
        if s.trace is not None:
            v = rt.view
            s.trace_event({
                "event": "enqueue", "t": round(s.now(), 6), "rid": v.rid,
                "request_id": rid, "aug_type": v.aug_type, "prompt_tokens": v.prompt_tokens,
                "context_tokens": v.context_tokens, "generated_tokens": v.generated_tokens,
                "calls_done": v.calls_done, "current_tool": v.current_tool,
                "observed_tool_s": list(v.observed_tool_s), "preempted": v.preempted,
                "metadata": {k: x for k, x in v.metadata.items() if _jsonable(x)},
            })

    def _turn_away(self, request: Request, rt: VRuntime, rej: Reject) -> None:
        """The policy rejected ``request``: it leaves the queue and vLLM aborts it; the policy,
        which rejected it, is not told ``on_leave``."""
        rid = request.request_id
        del self._members[rid]
        self.waiting_prefill -= self._wait_tokens.pop(rid, 0)
        self._s.forget_runtime(request)
        rt.on_reject(str(rej.reason))
        self._s.reject(request, str(rej.reason))

    def hit(self, request: Request) -> tuple[int, int]:
        """(prefix-hit tokens, hit blocks that are free now) for ``request`` in this pass."""
        rid = request.request_id
        h = self._hit.get(rid)
        if h is None:
            h = mirror.prefix_hit(self._s, request)
            self._hit[rid] = h
        return h

    def fits(self, view: RequestView) -> bool:
        """Whether ``view``'s next chunk fits the free KV blocks now (vLLM's admission test)."""
        req = _vreq(view)
        if req is None or req.request_id not in self._members:
            return False
        s = self._s
        return mirror.blocks_to_admit(s, req, self.hit(req), self.room) <= mirror.free_for_admit(s)

    def _candidates(self) -> Iterator[Request]:
        for view in self.policy.candidates(self._s.engine_state(), self.fits):
            req = _vreq(view)
            if req is not None and req.request_id in self._members:
                yield req

    def _next(self) -> Request | None:
        if self._peeked is not None and self._peeked.request_id in self._members:
            return self._peeked
        if not self._in_pass:
            return next(iter(self._members.values()), None)
        if self._gen is None:
            self._gen = self._candidates()
        self._peeked = next(self._gen, None)
        if self._peeked is not None:
            self.hit(self._peeked)  # before vLLM allocates: its blocks get cached on allocation
        return self._peeked

    # ------------------------------------------------------------------ RequestQueue API
    def add_request(self, request: Request) -> None:
        self._enter(request)

    def prepend_request(self, request: Request) -> None:
        self._enter(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for r in list(requests):
            self._enter(r)

    def peek_request(self) -> Request:
        req = self._next()
        if req is None:
            raise IndexError("peek from an empty queue")
        return req

    def pop_request(self) -> Request:
        req = self._next()
        if req is None:
            raise IndexError("pop from an empty queue")
        rid = req.request_id
        del self._members[rid]
        self._peeked = None
        admitted = req.status not in _BLOCKED and not (
            req.num_stale_output_tokens and not req.drop_stale_output)
        if admitted:
            self.admitted(self._s.runtime(req))
        if self._in_pass:
            self._popped[rid] = admitted
            if admitted:
                hit = self._hit.get(rid, (0, 0))[0] if req.num_computed_tokens == 0 else (
                    req.num_computed_tokens)
                self.room -= max(0, min(req.num_tokens - hit, self.room))
        return req

    def remove_request(self, request: Request) -> None:
        self.remove_requests((request,))

    def remove_requests(self, requests: Iterable[Request]) -> None:
        for r in list(requests):
            if self._members.pop(r.request_id, None) is None:
                continue
            # aborted while waiting; its runtime is gone if vLLM freed it first (a request
            # that stopped while preempted), and then the policy was told already
            rt = self._s.forget_runtime(r)
            if rt is not None:
                self.left(rt)

    def __bool__(self) -> bool:
        if self._in_pass:
            return self._next() is not None
        return bool(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._members.values()))


def _jsonable(x: Any) -> bool:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return True
    return isinstance(x, (list, tuple)) and all(isinstance(i, (str, int, float)) for i in x)


def _vreq(view: RequestView) -> Request | None:
    return getattr(view._r, "vreq", None)  # noqa: SLF001 - the runtime behind the view


class AugServeSchedulerMixin:
    """The augserve layer over a vLLM ``Scheduler`` (use the concrete classes below)."""

    # set by __init__
    aug_policy: Policy
    aug_info: EngineInfo

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s: Any = self
        self._cap = int(s.scheduler_config.max_num_batched_tokens)
        self._t0 = time.time()
        self._clock: Callable[[], float] = lambda: time.time() - self._t0
        self._factory: Callable[[Request], VRuntime | None] | None = None
        self._paused: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self._rt: dict[str, VRuntime] = {}
        self._steps = 0
        self._last_step_s = 0.0
        self._t_sched = 0.0
        self._t_update = 0.0
        self.step_log: list[StepStat] | None = None  # set to a list to record steps
        self._decisions: DecisionTrace | None = None  # the live engine's decision trace
        self.last_output: SchedulerOutput | None = None  # the last schedule()'s output
        #: requests scheduled without their hints because these were unusable (the warning
        #: metric of the engine side; the API server's validator rejects them first)
        self.hints_ignored = 0
        self.rejections = 0  # requests the policy turned away (aborted)
        self._to_reject: list[str] = []  # rejected, to abort at the end of this step
        s.waiting = PolicyQueue(self)
        cfg = dict((s.vllm_config.additional_config or {}).get("augserve") or {})
        trace = cfg.pop("trace", None)
        self.trace = open(trace, "a", buffering=1) if trace else None  # noqa: SIM115
        from augserve.vllm.deploy import make_policy, profile_timing

        floor, per_tok = profile_timing(cfg.get("profile"))
        self.aug_info = self._make_info(floor, per_tok)
        import vllm

        mirror.check_version(vllm.__version__)
        policy = make_policy(cfg, self._cap)
        policy.reset(self.aug_info)
        self.aug_policy = policy
        log.info("augserve scheduler: policy %s, budget cap %d tokens, %d KV blocks",
                 policy.name, self._cap, self.aug_info.total_blocks)

    # ------------------------------------------------------------------ wiring
    def attach(
        self,
        policy: Policy,
        clock: Callable[[], float] | None = None,
        runtime_factory: Callable[[Request], VRuntime | None] | None = None,
        paused: Callable[[], tuple[int, int]] | None = None,
        step_floor_s: float | None = None,
        prefill_s_per_token: float | None = None,
        decisions: DecisionTrace | None = None,
    ) -> EngineInfo:
        """Use ``policy`` from now on (the waiting queue must be empty); ``clock`` gives engine
        seconds, ``runtime_factory`` the runtime of a new vLLM request, ``paused`` the
        (requests, blocks) paused in tools; budgets, admissions and preemptions go to
        ``decisions`` (the caller flushes it per step). Resets the policy with the engine's
        facts."""
        s: Any = self
        if len(s.waiting) or s.running:
            raise RuntimeError("attach a policy only while the scheduler is idle")
        if clock is not None:
            self._clock = clock
        if runtime_factory is not None:
            self._factory = runtime_factory
        if paused is not None:
            self._paused = paused
        if step_floor_s is not None or prefill_s_per_token is not None:
            self.aug_info = self._make_info(
                self.aug_info.step_floor_s if step_floor_s is None else step_floor_s,
                self.aug_info.prefill_s_per_token if prefill_s_per_token is None
                else prefill_s_per_token)
        s.waiting = PolicyQueue(self)
        self._decisions = decisions
        self._rt.clear()
        self._steps = 0
        self._last_step_s = 0.0
        policy.reset(self.aug_info)
        self.aug_policy = policy
        return self.aug_info

    def detach(self) -> None:
        """Forget the attached run's runtimes and callbacks (the policy stays)."""
        s: Any = self
        self._factory = None
        self._decisions = None
        self._paused = lambda: (0, 0)
        self._t0 = time.time()
        self._clock = lambda: time.time() - self._t0
        self._rt.clear()
        s.waiting = PolicyQueue(self)

    def now(self) -> float:
        return self._clock()

    def trace_event(self, event: dict[str, Any]) -> None:
        """Append one JSON line to the ``trace`` file (``--additional-config``), if any."""
        if self.trace is not None:
            self.trace.write(json.dumps(event) + "\n")

    def runtime(self, request: Request) -> VRuntime:
        rid = request.request_id
        rt = self._rt.get(rid)
        if rt is None:
            if self._factory is not None:
                rt = self._factory(request)
            if rt is None:
                served = ServedRuntime(request, self.aug_info.block_size, self._t0,
                                       self.aug_info.max_model_len)
                if served.hint_error is not None:
                    self._hints_ignored(rid, served.hint_error)
                if served.tool_durations:  # a turn after a tool call: the policy learns of it
                    self.aug_policy.on_tool_return(served.view, served.tool_durations[-1])
                rt = served
            rt.vreq = request
            self._rt[rid] = rt
        return rt

    def forget_runtime(self, request: Request) -> VRuntime | None:
        """Drop ``request``'s runtime (it left); None if it had none or was dropped already."""
        return self._rt.pop(request.request_id, None)

    def reject(self, request: Request, reason: str) -> None:
        """The policy turned ``request`` away: it is aborted (finish reason ``abort``) at the
        end of this engine step; counted, logged sparsely and traced."""
        rid = request.request_id
        self._to_reject.append(rid)
        self.rejections += 1
        n = self.rejections
        if n <= 10 or n % 100 == 0:
            log.warning("augserve: policy %s rejected request %s (%s); %d so far",
                        self.aug_policy.name, rid, reason, n)
        self.trace_event({"event": "reject", "t": round(self.now(), 6), "request_id": rid,
                          "reason": reason})

    def _hints_ignored(self, rid: str, reason: str) -> None:
        """Count (and log, sparsely) a request scheduled without its unusable hints."""
        self.hints_ignored += 1
        n = self.hints_ignored
        if n <= 10 or n % 100 == 0:
            log.warning("augserve: request %s scheduled without its hints (%s); %d so far",
                        rid, reason, n)
        self.trace_event({"event": "hints_ignored", "t": round(self.now(), 6),
                          "request_id": rid, "reason": reason, "count": n})

    def _make_info(self, floor_s: float | None, per_token_s: float | None) -> EngineInfo:
        s: Any = self
        kvc = s.kv_cache_config
        nb = int(kvc.num_blocks)
        tensor_bytes = sum(int(t.size) for t in getattr(kvc, "kv_cache_tensors", ()) or ())
        per_tok = tensor_bytes // max(1, nb * s.block_size) if tensor_bytes else 1
        return EngineInfo(
            total_blocks=int(s.kv_cache_manager.block_pool.num_gpu_blocks) - 1,  # null block
            block_size=int(s.block_size), kv_bytes_per_token=max(1, int(per_tok)),
            max_num_batched_tokens=self._cap, max_num_seqs=int(s.max_num_running_reqs),
            max_model_len=int(s.max_model_len),
            prefill_s_per_token=DEFAULT_PREFILL_S_PER_TOKEN if per_token_s is None
            else float(per_token_s),
            step_floor_s=DEFAULT_STEP_FLOOR_S if floor_s is None else float(floor_s),
            swap_bytes_per_s=0.0,  # stock vLLM V1 has no swap: min-waste never picks it
        )

    # ------------------------------------------------------------------ state for policies
    def engine_state(self) -> EngineState:
        s: Any = self
        running = s.running
        pf = 0
        for r in running:
            if r.is_prefill_chunk:
                pf += max(0, r.num_tokens - r.num_computed_tokens)
        n_paused, paused_blocks = self._paused()
        return EngineState(
            now_s=self._clock(), free_blocks=s.kv_cache_manager.block_pool.get_num_free_blocks(),
            paused_blocks=paused_blocks, num_running=len(running),
            num_waiting=len(s.waiting) + len(s.kv_holding_waiting), num_paused=n_paused,
            last_step_s=self._last_step_s, step=self._steps, running_prefill_tokens=pf,
            waiting_prefill_tokens=s.waiting.waiting_prefill,
            swap_budget_blocks=0, info=self.aug_info,
        )

    # ------------------------------------------------------------------ vLLM hooks
    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        s: Any = self
        self._steps += 1
        running = s.running
        queue: PolicyQueue = s.waiting
        n_dec = sum(1 for r in running if not r.is_prefill_chunk)
        if len(queue) or n_dec < len(running):  # prefill work could be scheduled
            state = self.engine_state()
            self.aug_policy.on_step(state)
            b = int(self.aug_policy.token_budget(state))
            budget = min(self._cap, max(1, b, n_dec))
            if self._decisions is not None:
                self._decisions.budget(budget)
        else:
            budget = self._cap
        s.max_num_scheduled_tokens = budget
        queue.begin_pass(mirror.room_after_running(self, budget))
        try:
            out = super().schedule(throttle_prefills)  # type: ignore[misc]
        finally:
            popped = queue.end_pass()
        self._t_sched = time.perf_counter()
        self.last_output = out
        nst = out.num_scheduled_tokens
        for rid, told in popped.items():
            req = s.requests.get(rid)
            if req is None or req.status != RequestStatus.RUNNING or rid not in nst:
                continue
            rt = self.runtime(req)
            if not told:  # popped while blocked, then scheduled
                queue.admitted(rt)
            rt.on_admit(req.num_computed_tokens - nst[rid])
            if self._decisions is not None:
                self._decisions.admitted(rt.view.rid)
            if self.trace is not None:
                self.trace_event({
                    "event": "admit", "t": round(self.now(), 6), "step": self._steps,
                    "rid": rt.view.rid, "request_id": rid, "budget": budget,
                    "free_blocks": s.kv_cache_manager.block_pool.get_num_free_blocks(),
                    "running": len(s.running), "tracked": len(self._rt)})
        if self.step_log is not None and out.total_num_scheduled_tokens > 0:
            self.step_log.append(self._step_stat(out))
        return out

    def _step_stat(self, out: SchedulerOutput) -> StepStat:
        s: Any = self
        n_pf = n_dec = dec_ctx = 0
        attn = 0.0
        for rid, n in out.num_scheduled_tokens.items():
            req = s.requests[rid]
            before = req.num_computed_tokens - n
            if n == 1 and req.num_output_tokens > 0 and before == req.num_tokens - 1:
                n_dec += 1
                dec_ctx += before + 1
            else:
                n_pf += n
                attn += n * (before + n / 2)
        return StepStat(
            step=self._steps, t_s=self._clock(), n_tokens=int(out.total_num_scheduled_tokens),
            prefill_tokens=n_pf, num_decode=n_dec, decode_ctx_sum=dec_ctx, prefill_attn=attn,
            num_running=len(s.running), num_waiting=len(s.waiting),
            free_blocks=s.kv_cache_manager.block_pool.get_num_free_blocks(),
        )

    def update_from_output(self, scheduler_output: SchedulerOutput, model_runner_output: Any):
        t = time.perf_counter()
        if scheduler_output.total_num_scheduled_tokens > 0:
            self._last_step_s = t - max(self._t_sched, self._t_update)
        self._t_update = t
        outputs = super().update_from_output(  # type: ignore[misc]
            scheduler_output, model_runner_output)
        if self._to_reject:
            self._abort_rejected(outputs)
        return outputs

    def _abort_rejected(self, outputs: dict[int, EngineCoreOutputs]) -> None:
        """Finish the rejected requests as aborted and tell their clients (as vLLM tells them
        of requests it finishes with an error)."""
        s: Any = self
        ids, self._to_reject = self._to_reject, []
        for req in s.finish_requests(ids, RequestStatus.FINISHED_ABORTED):
            out = EngineCoreOutput(request_id=req.request_id, new_token_ids=[],
                                   finish_reason=req.get_finished_reason(),
                                   events=req.take_events(), trace_headers=req.trace_headers)
            eco = outputs.get(req.client_index)
            if eco is None:
                outputs[req.client_index] = EngineCoreOutputs(outputs=[out])
            else:
                eco.outputs.append(out)

    def _preempt_request(self, request: Request, *args: Any, **kwargs: Any) -> None:
        computed = request.num_computed_tokens
        rt = self._rt.get(request.request_id)
        super()._preempt_request(request, *args, **kwargs)  # type: ignore[misc]
        if rt is not None:
            rt.on_preempt(computed)
            if self._decisions is not None:
                self._decisions.preempted(rt.view.rid)

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        rt = self.forget_runtime(request)
        if rt is not None and (rt.ends_request()
                               or request.status == RequestStatus.FINISHED_ABORTED):
            s: Any = self
            s.waiting.left(rt)
        return super()._free_request(request, *args, **kwargs)  # type: ignore[misc]


class AugServeScheduler(AugServeSchedulerMixin, Scheduler):
    """vLLM's synchronous ``Scheduler`` under an augserve policy (step-wise engine)."""


class AugServeAsyncScheduler(AugServeSchedulerMixin, AsyncScheduler):
    """vLLM's ``AsyncScheduler`` under an augserve policy (serving, async scheduling on)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        procs = self.vllm_config.model_config.logits_processors or ()
        if not any(getattr(p, "__name__", str(p)).endswith("HintValidator") for p in procs):
            log.warning("augserve: request hints are not checked at the API server; add "
                        "--logits-processors %s (python -m augserve.vllm.server does) so that "
                        "bad hints get a 400; without it they are dropped here and counted",
                        HINT_VALIDATOR)
