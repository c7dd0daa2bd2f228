"""SimEngine: a discrete-event, iteration-level model of a vLLM-V1-style engine.

One step = one forward pass. Each step, in vLLM V1's order:

1. every running request that is decoding gets one token (vLLM requires
   ``max_num_batched_tokens >= max_num_seqs``, so decodes always fit the budget);
2. running requests with prefill work (chunked prefill, a resumed request's returned tokens,
   recompute after a discard) get chunks, in admission order, within the step's token budget;
3. if nobody was preempted this step, waiting requests are admitted in the policy's order until
   one does not fit (vLLM's head-of-line rule), the budget is spent, or ``max_num_seqs`` run.

KV is paged (``block_size`` tokens a block). When a running request needs a block and none is
free, the most recently admitted running request is preempted by recompute (its blocks go back
to the pool, where the prefix cache may keep them). Step time comes from a
:class:`~augserve.engine.cost.CostModel`.

Tool interception (the KV mode comes from ``policy.on_intercept``):

* ``vllm``: the request ends at the call; when the tool returns, the continuation (context +
  returned tokens) is submitted as a new request at the tail of the waiting queue; with prefix
  caching it reuses whatever of its context is still cached.
* ``preserve``: the blocks stay allocated during the call; on return the request rejoins the
  running set and prefills only the returned tokens. With every ``max_num_seqs`` slot taken it
  waits, holding its KV, in a FIFO drained before the policy's queue (vLLM 0.32's
  ``kv_holding_waiting``); the same holds for a swapped request none of whose blocks left.
* ``discard``: the blocks are freed; on return the context is recomputed in chunks.
* ``swap``: the blocks are copied to CPU at up to ``swap_budget_blocks`` a step (from the PCIe
  bandwidth and the last step's duration), freeing GPU blocks as they go; on return the request
  is re-admitted, its blocks are copied back within the same per-step budget, then it prefills
  the returned tokens. Copies overlap the forward pass (InferCept's pipelined, budgeted swap,
  Abhyankar et al., ICML 2024): each direction moves, per step, what ``pcie_bytes_per_s`` (the
  profile's cited figure) carries in that step's compute time, so a swapped request waits for
  its blocks at the PCIe rate; a step of copies alone lasts as long as its copies (at least
  the cheapest step). ``swap_stall_s`` in the stats sums what copies added beyond compute.
  Only a request's own blocks are swapped: its references to shared prefix blocks stay.

Speed: decoding requests are tracked lazily (a request's tokens are derived from the global step
counter, not updated one by one), so a step costs O(events), not O(batch). When a stretch of
decode-only steps has no event (no arrival, tool return, segment end, prefill or block
shortage), the whole stretch is advanced with one vectorized cost evaluation; results are
identical to stepping (``skip_stretches=False``).

The parts live beside this loop: the request scripts are played by
:class:`~augserve.engine.player.ScriptPlayer` (shared with the live engine), the lazy decode set
and stretch planning by :mod:`augserve.engine.decode_set`, KV during tool calls by
:class:`~augserve.engine.tool_kv.ToolKV`, admission block arithmetic by
:mod:`augserve.engine.admission`, the block pool by :mod:`augserve.engine.kv`.

Units: seconds, tokens, blocks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augserve.contract import (
    EngineInfo,
    EngineState,
    KVMode,
    Reject,
    RequestView,
    State,
    kv_decision,
)
from augserve.engine.admission import fits, plan_admission
from augserve.engine.base import Engine, RunResult, validated
from augserve.engine.cost import CostModel, LinearCostModel, Profile
from augserve.engine.decode_set import DecodeSet, plan_stretch
from augserve.engine.kv import BlockPool
from augserve.engine.player import ScriptPlayer, new_record
from augserve.engine.tool_kv import ToolKV
from augserve.engine.trace import DecisionTrace
from augserve.prefix import block_keys
from augserve.request import AugRequest, ToolCall
from augserve.sched.base import Policy


@dataclass
class SimConfig:
    """Engine settings that are not part of the model/GPU profile."""

    max_num_batched_tokens: int = 8192  # hard cap on the per-step budget (tokens)
    max_num_seqs: int = 256
    prefix_caching: bool = True  # vLLM V1 default; False = the vLLM InferCept measured
    swap_space_bytes: float = 64 * 2**30  # CPU memory for swapped KV
    max_time_s: float = math.inf  # stop the clock here; unfinished requests are reported
    skip_stretches: bool = True
    audit: bool = False  # check KV accounting after every step (tests; slow)
    decision_trace: str | None = None  # JSONL file of per-step decisions (engine/trace.py)


class _Req:
    """Engine-side runtime state of one request (the policy sees it through RequestView)."""

    __slots__ = (
        "req", "rec", "state", "seg_idx", "seg_gen", "ctx", "computed", "blocks", "cpu_blocks",
        "submit_s", "wait_since_s", "preempted", "mode", "tool_durations", "return_lengths",
        "current_tool", "chunks", "in_decode", "dec_step0", "dec_computed0", "dec_gen0", "epoch",
        "prev_computed", "recomp_left", "swap_out_left", "swap_in_left", "view", "seq", "gen",
        "run", "keys", "shared",
    )

    def __init__(self, req: AugRequest, seq: int, oracle: bool, run: SimRun) -> None:
        self.req = req
        self.seq = seq
        self.run = run
        self.gen = 0  # tokens generated so far (materialized part)
        self.rec = new_record(req)
        self.state = State.WAITING
        self.seg_idx = 0
        self.seg_gen = 0  # tokens generated in the current segment (materialized part)
        self.ctx = req.prompt_tokens  # tokens the model knows (prompt + generated + returned)
        self.computed = 0  # tokens whose KV exists (GPU or CPU)
        self.blocks = 0  # GPU blocks in its block table (its first ``shared`` are shared)
        self.keys = block_keys(req.prefix, run.bs)  # content keys of its shared prompt blocks
        self.shared = 0  # leading blocks that are references to shared blocks (engine.kv)
        self.cpu_blocks = 0
        self.submit_s = req.arrival_s
        self.wait_since_s = req.arrival_s
        self.preempted = False
        self.mode = KVMode.PRESERVE
        self.tool_durations: list[float] = []
        self.return_lengths: list[int] = []
        self.current_tool: str | None = None
        #: token times: floats (a prefill's token), or (first, end) step ranges of the clock
        self.chunks: list = []
        # lazy decoding (augserve.engine.decode_set): the step it joined at, and its computed
        # tokens and segment tokens then
        self.in_decode = False
        self.dec_step0 = self.dec_computed0 = self.dec_gen0 = 0
        self.epoch = 0
        self.prev_computed = 0  # high-water mark of computed tokens before KV was lost
        self.recomp_left = 0
        self.swap_out_left = 0
        self.swap_in_left = 0
        self.view = RequestView(self, oracle)

    # RequestView reads these; decoding requests are materialized lazily from the step counter.
    def _lag(self) -> int:
        return self.run.n_steps - self.dec_step0 if self.in_decode else 0

    def generated(self) -> int:
        return self.gen + self._lag()

    def context(self) -> int:
        return self.ctx + self._lag()

    def computed_now(self) -> int:
        return self.computed + self._lag()

    def first_token_s(self) -> float | None:
        return self.chunks[0] if self.chunks else None  # the first token comes from a prefill


class SimEngine(Engine):
    """Discrete-event simulator of an iteration-level (vLLM V1) serving engine."""

    def __init__(
        self,
        profile: Profile | None = None,
        cost: CostModel | None = None,
        config: SimConfig | None = None,
        num_gpu_blocks: int | None = None,
        **overrides: object,
    ) -> None:
        if profile is None and (cost is None or num_gpu_blocks is None):
            raise ValueError("SimEngine needs a profile, or both cost= and num_gpu_blocks=")
        self.profile = profile
        self.cost = cost if cost is not None else LinearCostModel(profile)
        self.cfg = config if config is not None else SimConfig()
        for k, v in overrides.items():
            if not hasattr(self.cfg, k):
                raise ValueError(f"unknown SimEngine setting {k!r}")
            setattr(self.cfg, k, v)
        self.block_size = profile.block_size if profile is not None else 16
        self.num_blocks = num_gpu_blocks if num_gpu_blocks is not None else profile.num_gpu_blocks()
        self.kv_bytes_per_token = profile.kv_bytes_per_token if profile is not None else 1
        self.max_model_len = profile.max_model_len if profile is not None else 1 << 30
        self.swap_bytes_per_s = profile.pcie_bytes_per_s if profile is not None else math.inf
        if self.cfg.max_num_batched_tokens < self.cfg.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens={self.cfg.max_num_batched_tokens} must be >= "
                f"max_num_seqs={self.cfg.max_num_seqs} (as vLLM requires)"
            )

    # ------------------------------------------------------------------ public
    def info(self) -> EngineInfo:
        # read off the active cost model: cheapest step, and marginal cost of a token
        floor = self.cost.step_time(1, 0, 0.0)
        per_tok = (self.cost.step_time(4096, 0, 0.0) - self.cost.step_time(2048, 0, 0.0)) / 2048
        return EngineInfo(
            total_blocks=self.num_blocks, block_size=self.block_size,
            kv_bytes_per_token=self.kv_bytes_per_token,
            max_num_batched_tokens=self.cfg.max_num_batched_tokens,
            max_num_seqs=self.cfg.max_num_seqs, max_model_len=self.max_model_len,
            prefill_s_per_token=per_tok, step_floor_s=floor,
            swap_bytes_per_s=self.swap_bytes_per_s,
        )

    def start(self, requests: Sequence[AugRequest], policy: Policy,
              progress: bool = False) -> SimRun:
        """A run to drive step by step (:class:`~augserve.engine.base.Run`)."""
        return SimRun(self, requests, policy, progress)


class SimRun:
    """One simulation (a :class:`~augserve.engine.base.Run`): all mutable state of a run."""

    def __init__(
        self, eng: SimEngine, requests: Sequence[AugRequest], policy: Policy, progress: bool
    ) -> None:
        self.eng = eng
        self.cfg = eng.cfg
        self.policy = policy
        self.bs = eng.block_size
        self.info = eng.info()
        policy.reset(self.info)
        reqs = validated(requests, eng.max_model_len, eng.num_blocks, self.bs)
        self.reqs = [_Req(r, i, policy.oracle, self) for i, r in enumerate(reqs)]
        self.player: ScriptPlayer[_Req] = ScriptPlayer(
            self.reqs, policy, arrive=self.arrive, resume=self.resume, progress=progress,
            desc=f"sim {policy.name}")
        self.pool = BlockPool(eng.num_blocks, self.cfg.prefix_caching)
        self.now = 0.0
        self.n_steps = 0  # steps done
        self.clock: list[float] = []  # end time of each step
        self.last_dt = 0.0
        self.running: dict[_Req, None] = {}  # admission order; tail = preemption victim
        self.prefill: dict[_Req, None] = {}  # running requests with prefill work, in order
        self.waiting: dict[_Req, None] = {}  # the policy's queue
        #: resumed after a tool call with their KV on the GPU while every sequence slot was
        #: taken: vLLM 0.32's ``kv_holding_waiting`` (FIFO, drained before the waiting queue)
        self.held: dict[_Req, None] = {}
        self.waiting_prefill = 0  # Σ (ctx - computed) over waiting requests (fixed while waiting)
        self.dec = DecodeSet(self.bs)
        self.stats = {
            "steps": 0, "forward_s": 0.0, "recompute_s": 0.0, "prefill_tokens": 0,
            "decode_tokens": 0, "recompute_tokens": 0, "preemptions": 0, "swap_out_blocks": 0,
            "swap_in_blocks": 0, "swap_stall_s": 0.0, "prefix_hit_tokens": 0, "stretch_steps": 0,
            "pins_reclaimed": 0, "num_gpu_blocks": eng.num_blocks,
        }
        self.kv = ToolKV(self.pool, self.bs, self.info.kv_bytes_per_token,
                         eng.swap_bytes_per_s, self.cfg.swap_space_bytes,
                         self.info.step_floor_s, self.stats)
        self.dec_allocated = False  # this step's decode blocks are allocated already
        self.trace = (DecisionTrace.for_policy(self.cfg.decision_trace, policy.name)
                      if self.cfg.decision_trace else None)

    # ------------------------------------------------------------------ helpers
    def state(self) -> EngineState:
        kv = self.kv
        return EngineState(
            now_s=self.now, free_blocks=self.pool.free, paused_blocks=kv.paused_blocks,
            num_running=len(self.running), num_waiting=len(self.waiting) + len(self.held),
            num_paused=len(kv.paused), last_step_s=self.last_dt, step=self.n_steps,
            running_prefill_tokens=sum(r.ctx - r.computed for r in self.prefill),
            waiting_prefill_tokens=self.waiting_prefill,
            swap_budget_blocks=kv.budget(self.last_dt), info=self.info,
        )

    def nblocks(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def enqueue(self, r: _Req, t: float) -> Reject | None:
        r.state = State.WAITING
        r.wait_since_s = t
        self.waiting[r] = None
        self.waiting_prefill += r.ctx - r.computed
        return self.policy.on_enqueue(r.view, self.state())

    def arrive(self, r: _Req) -> None:
        rej = self.enqueue(r, r.req.arrival_s)
        if rej is not None:  # admission control: the request leaves without running
            del self.waiting[r]
            self.waiting_prefill -= r.ctx - r.computed
            r.state = State.FINISHED
            self.player.reject(r, r.req.arrival_s, str(rej.reason))

    def run_on(self, r: _Req) -> None:
        """``r`` (re)joins the running set with prefill work (its next chunk)."""
        r.state = State.RUNNING
        self.running[r] = None
        self.prefill[r] = None

    # ------------------------------------------------------------------ main loop
    def decision_pending(self) -> bool:
        """A waiting request could be admitted in the next step: the policy decides something."""
        return (bool(self.waiting) and self.pool.free > 0
                and len(self.running) < self.cfg.max_num_seqs)

    def advance(self) -> bool:
        """Run until the next step that needs a policy decision. True: call ``step()`` next;
        False: the run is over (everything finished, or the time limit)."""
        player = self.player
        cfg = self.cfg
        kv = self.kv
        while not player.all_finished():
            t_ex = kv.next_expiry_s()
            if t_ex is not None and t_ex <= self.now:  # a TTL ends before its tool returns
                for r in kv.expire_due(self.now):
                    if self.trace is not None:
                        self.trace.expired(r.req.rid)
            player.play_due(self.now)
            if self.now >= cfg.max_time_s:
                return False
            if not self.running and not kv.swapping_out and not self.can_admit_anything():
                nxt = self.next_event_time()
                if nxt is None:
                    if self.waiting:
                        raise RuntimeError("deadlock: waiting requests can never be admitted")
                    return False
                self.now = max(self.now, min(nxt, cfg.max_time_s))
                continue
            if (cfg.skip_stretches and self.dec.n and not self.prefill and not self.waiting
                    and not self.held and not kv.transfers_pending()):
                if self.stretch():
                    continue
            if self.decision_pending():
                return True
            self.step()
        return False

    def can_admit_anything(self) -> bool:
        # (with no free block a pin may still be reclaimed for the head)
        return bool(self.held) or (bool(self.waiting) and (
            self.pool.free > 0 or bool(self.kv.pins) or self.waiting_holder() is not None))

    def next_event_time(self) -> float | None:
        """Earliest next arrival, tool return or KV time-to-live end (s); None if none."""
        t = self.player.next_event_time()
        e = self.kv.next_expiry_s()
        if e is not None:
            t = e if t is None or e < t else t
        return t

    # ------------------------------------------------------------------ one step
    def step(self) -> None:
        """One engine iteration (one forward pass, or a jump to the next event if idle)."""
        before = self.n_steps
        self._step()
        if self.trace is not None and self.n_steps > before:  # an idle jump ran no step
            self.trace.flush(self.n_steps, self.now)
        if self.cfg.audit:
            self.audit()

    def share(self, r: _Req, upto: int) -> None:
        """Name ``r``'s shared-prefix blocks filled by its first ``upto`` scheduled tokens in
        the pool (V1 caches a block once full), while they follow its shared ones unbroken."""
        k = min(len(r.keys), upto // self.bs)
        while r.shared < k and r.shared < r.blocks and self.pool.share(r.keys[r.shared]):
            r.shared += 1

    def _step(self) -> None:
        pool = self.pool
        dec = self.dec
        kv = self.kv
        cfg = self.cfg
        preempted = False
        # 1. decodes: blocks for this step's new tokens
        need = dec.blocks_needed(self.n_steps)
        while need > pool.free:
            if not self.reclaim_pin():
                self.preempt(next(reversed(self.running)))
                preempted = True
            need = dec.blocks_needed(self.n_steps)
        pool.allocate(need)
        self.dec_allocated = True
        # 2. running prefills, in admission order
        sched: list[tuple[_Req, int]] = []
        if self.prefill or self.waiting or self.held:
            state = self.state()
            self.policy.on_step(state)
            budget = int(self.policy.token_budget(state))
            budget = max(1, min(budget, cfg.max_num_batched_tokens))
            if self.trace is not None:
                self.trace.budget(budget)
            room = budget - dec.n
            for r in list(self.prefill):
                if room <= 0:
                    break
                if r.state is not State.RUNNING:  # preempted earlier in this loop
                    continue
                if r.swap_in_left:
                    continue
                c = min(r.ctx - r.computed, room)
                # (it may hold the blocks of a bigger chunk: a swap-in sized at admission)
                add = max(0, self.nblocks(r.computed + c) - r.blocks)
                while add > pool.free and r.state is State.RUNNING:
                    if not self.reclaim_pin():
                        self.preempt(next(reversed(self.running)))
                        preempted = True
                if r.state is not State.RUNNING:
                    continue
                pool.allocate(add)
                r.blocks += add
                self.share(r, r.computed + c)
                sched.append((r, c))
                room -= c
            # 3. admissions
            if not preempted and room > 0:
                self.admit(room, sched)
        self.dec_allocated = False
        # 4. time
        sched = [(r, c) for r, c in sched if r.state is State.RUNNING]
        pf_tokens = 0
        pf_attn = 0.0
        rc_tokens = 0
        for r, c in sched:
            pf_tokens += c
            pf_attn += c * (r.computed + c / 2)
            if r.recomp_left:
                x = c if c < r.recomp_left else r.recomp_left
                r.recomp_left -= x
                r.rec.recomputed_tokens += x
                rc_tokens += x
        dec_ctx = dec.ctx
        n_tokens = dec.n + pf_tokens
        dt = self.eng.cost.step_time(n_tokens, dec_ctx, pf_attn) if n_tokens else self.last_dt
        # swap copies overlap the forward pass (InferCept's budgeted swap): each direction (PCIe
        # is full duplex) moves what fits in this step's compute time, or in the last step's
        # when only copies run; a request waits for its own blocks to come back
        swapping = kv.transfers_pending()
        copy_s = 0.0
        if swapping:
            budget = kv.budget(dt)
            if kv.swapping_in:
                copy_s = kv.copy_s(kv.swap_in(budget))
            if kv.swapping_out:
                copy_s = max(copy_s, kv.copy_s(kv.swap_out(budget)))
        if n_tokens == 0:
            # only swap traffic or nothing schedulable: wait for the next event
            nxt = self.next_event_time()
            if swapping:  # a step of pure copying: as long as its copies, at least a step
                dt = max(self.info.step_floor_s, copy_s)
                self.stats["swap_stall_s"] += dt - self.info.step_floor_s
                self.tick(dt, 0, 0, 0)
            elif nxt is not None:
                self.now = max(self.now, nxt)
            elif not preempted:  # (after preempting all that ran, the next step admits)
                raise RuntimeError("deadlock: nothing can run and no event is pending")
            return
        if copy_s > dt:  # (a single block slower than the step) the step ends with its copies
            self.stats["swap_stall_s"] += copy_s - dt
            dt = copy_s
        self.stats["recompute_s"] += dt * rc_tokens / n_tokens
        self.stats["prefill_tokens"] += pf_tokens
        self.stats["recompute_tokens"] += rc_tokens
        self.tick(dt, dec.n, dec_ctx, 1)
        # 5. outcomes
        t = self.now
        for r, c in sched:
            r.computed += c
            if r.computed == r.ctx:
                del self.prefill[r]
                self.emit(r, t)
        self.fire_segment_ends()

    def tick(self, dt: float, n_dec: int, dec_ctx: int, steps: int) -> None:
        self.now = self.now + dt
        self.last_dt = dt
        self.clock.append(self.now)
        self.n_steps += 1
        self.stats["steps"] += 1
        self.stats["forward_s"] += dt if steps else 0.0
        self.stats["decode_tokens"] += n_dec
        self.dec.ctx += self.dec.n

    def admit(self, room: int, sched: list) -> int:
        """vLLM's waiting loop: admit in the policy's order until a request does not fit (its
        head-of-line rule), the room is spent or ``max_num_seqs`` run. Returns the room left."""
        pool = self.pool
        cfg = self.cfg
        # vLLM drains the requests that hold KV first, in order, under the same limits
        while self.held and room > 0 and len(self.running) < cfg.max_num_seqs:
            r = next(iter(self.held))
            c = min(r.ctx - r.computed, room)
            add = max(0, self.nblocks(r.computed + c) - r.blocks)
            if add > pool.free:
                return room  # head-of-line, as in the waiting queue
            del self.held[r]
            pool.allocate(add)
            r.blocks += add
            self.share(r, r.computed + c)
            self.run_on(r)
            sched.append((r, c))
            room -= c
        if self.held:
            return room  # no sequence slot (or no room) left for the policy's queue
        room = self.admit_queue(room, sched)
        # the policy may pass over what does not fit: with nothing running, free what nothing
        # else would (pins, partial swaps) until something runs or nothing is left to free
        while (not self.running and self.waiting and room > 0
               and (self.reclaim_pin() or (not self.kv.paused and self.reclaim_waiting(None)))):
            room = self.admit_queue(room, sched)
        return room

    def admit_queue(self, room: int, sched: list) -> int:
        """One walk of the policy's queue (:meth:`admit`); returns the room left."""
        pool = self.pool
        bs = self.bs
        cfg = self.cfg
        pol = self.policy

        def fits_now(view: RequestView) -> bool:  # reads ``room`` as the loop leaves it
            return fits(plan_admission(view._r, room, pool, bs), pool)

        for v in pol.candidates(self.state(), fits_now):
            r = v._r
            if room <= 0 or len(self.running) >= cfg.max_num_seqs:
                break
            if r.state is not State.WAITING:
                raise RuntimeError(f"policy offered {r.req.rid}, which is not waiting")
            plan = plan_admission(r, room, pool, bs)
            # with nothing running, nothing else would free the pins it waits for (Continuum
            # frees one at admission only then)
            while (not fits(plan, pool) and not self.running
                   and (self.reclaim_pin() or (not self.kv.paused and self.reclaim_waiting(r)))):
                plan = plan_admission(r, room, pool, bs)
            if not fits(plan, pool):
                break  # head-of-line: vLLM stops admitting at the first request that does not fit
            hit, _, c, add = plan
            self.waiting_prefill -= r.ctx - r.computed  # before a prefix hit changes computed
            if hit:
                r.shared = pool.take(r.keys, r.req.rid, hit)
                r.blocks += hit
                r.computed = hit * bs
                r.rec.prefix_hit_tokens += r.computed
                self.stats["prefix_hit_tokens"] += r.computed
            r.recomp_left = max(0, r.prev_computed - r.computed)
            pool.allocate(add)
            r.blocks += add
            if not r.cpu_blocks:  # (a swapped request's blocks come back as its own)
                self.share(r, r.computed + c)
            del self.waiting[r]
            r.preempted = False
            self.run_on(r)
            pol.on_admit(r.view)
            if self.trace is not None:
                self.trace.admitted(r.req.rid)
            if self.kv.start_swap_in(r):
                continue  # compute starts once its KV is back
            sched.append((r, c))
            room -= c
        return room

    def waiting_holder(self, head: _Req | None = None) -> _Req | None:
        """The latest-queued waiting request other than ``head`` that keeps GPU blocks of its
        own (a swap-out its call's return cut short), or None."""
        for v in reversed(self.waiting):
            if v is not head and v.blocks > v.shared:
                return v
        return None

    def reclaim_waiting(self, head: _Req | None) -> bool:
        """Nothing runs, no tool is running and ``head`` (or the policy's choice) does not fit:
        the blocks it waits for may be held by waiting requests whose swap-out the tool's
        return cut short, which nothing would ever free. Drop
        one's KV, GPU and CPU part (its GPU context is incomplete, so it recomputes), latest
        queued first as V1 preempts the last running; a preemption. False if none."""
        v = self.waiting_holder(head)
        if v is None:
            return False
        self.waiting_prefill += v.computed
        self.kv.drop_partial(v)
        v.prev_computed = max(v.prev_computed, v.computed)
        v.computed = 0
        v.recomp_left = 0
        v.preempted = True
        v.rec.preemptions += 1
        self.stats["preemptions"] += 1
        if self.trace is not None:
            self.trace.preempted(v.req.rid)
        return True

    def reclaim_pin(self) -> bool:
        """Free one TTL pin under memory pressure (:meth:`ToolKV.reclaim_pin`); False if none."""
        r = self.kv.reclaim_pin()
        if r is not None and self.trace is not None:
            self.trace.expired(r.req.rid)
        return r is not None

    def preempt(self, v: _Req) -> None:
        """Preempt ``v`` by recompute (vLLM V1): free its blocks; it waits at the front."""
        if v.in_decode:
            self.dec.leave(v, self.n_steps, self.dec_allocated)
        del self.running[v]
        self.prefill.pop(v, None)
        full = v.computed // self.bs
        if self.kv.abandon_swap_in(v):
            # the GPU blocks hold an incomplete context, so nothing of it is cached; recompute
            # covers it all
            full = 0
        self.kv.release(v, full)
        v.prev_computed = max(v.prev_computed, v.computed)
        v.computed = 0
        v.recomp_left = 0
        v.preempted = True
        v.rec.preemptions += 1
        self.stats["preemptions"] += 1
        if self.trace is not None:
            self.trace.preempted(v.req.rid)
        self._requeue(v, self.now)

    # ------------------------------------------------------------------ tokens and tools
    def emit(self, r: _Req, t: float) -> None:
        """``r`` finished a prefill at ``t``: it samples one token."""
        if r.seg_gen == 0:
            r.rec.seg_start_idx.append(self.token_count(r))
            r.rec.seg_first_s.append(t)
        r.chunks.append(t)
        r.ctx += 1
        r.gen += 1
        r.seg_gen += 1
        if r.seg_gen == r.req.segments[r.seg_idx].gen_tokens:
            self.segment_end(r)
        else:
            self.dec.join(r, self.n_steps)

    def token_count(self, r: _Req) -> int:
        n = 0
        for ch in r.chunks:
            n += 1 if isinstance(ch, float) else ch[1] - ch[0]
        return n

    def fire_segment_ends(self) -> None:
        dec = self.dec
        while (r := dec.pop_ended(self.n_steps)) is not None:
            dec.leave(r, self.n_steps, self.dec_allocated)
            self.segment_end(r)

    def segment_end(self, r: _Req) -> None:
        t = self.now
        del self.running[r]
        self.prefill.pop(r, None)
        call = self.player.end_segment(r, t)
        if call is None:  # the last segment: the request is done
            r.state = State.FINISHED
            self.kv.release(r, r.computed // self.bs)
            self.policy.on_leave(r.view)
            return
        r.state = State.PAUSED
        d = kv_decision(self.policy.on_intercept(r.view, self.state()))
        self.kv.park(r, d.mode, d.ttl_s, t, call.duration_s)
        if self.trace is not None:
            self.trace.kv(r.req.rid, r.mode.value)

    def resume(self, r: _Req, t_ret: float, call: ToolCall) -> None:
        """``r``'s tool returned at ``t_ret`` (the player recorded it)."""
        r.ctx += call.return_tokens
        r.seg_gen = 0
        if self.kv.unpark(r):  # its KV is on the GPU: it needs only a sequence slot
            if len(self.running) < self.cfg.max_num_seqs:
                self.run_on(r)
            else:
                r.state = State.WAITING
                r.wait_since_s = t_ret
                self.held[r] = None
            return
        r.submit_s = t_ret
        r.preempted = False
        self._requeue(r, t_ret)

    def _requeue(self, r: _Req, t: float) -> None:
        if self.enqueue(r, t) is not None:
            raise RuntimeError(f"policy {self.policy.name} rejected {r.req.rid} after it ran: "
                               "Reject is an answer to a new arrival only")

    # ------------------------------------------------------------------ stretches
    def stretch(self) -> bool:
        """Advance a run of decode-only steps with no event at once. False if under 2 steps."""
        nxt = self.next_event_time()
        t_lim = min(nxt if nxt is not None else math.inf, self.cfg.max_time_s)
        plan = plan_stretch(self.dec, self.n_steps, self.now, self.pool.free, t_lim,
                            self.eng.cost)
        if plan is None:
            return False
        m = plan.steps
        nd = self.dec.n
        self.pool.allocate(plan.blocks)
        self.clock.extend(plan.ends_s.tolist())
        self.now = float(plan.ends_s[-1])
        self.last_dt = float(plan.dts[-1])
        self.n_steps += m
        self.dec.ctx += nd * m
        st = self.stats
        st["steps"] += m
        st["stretch_steps"] += m
        st["forward_s"] += float(plan.dts.sum())
        st["decode_tokens"] += nd * m
        self.fire_segment_ends()
        if self.trace is not None:
            self.trace.flush(self.n_steps, self.now)
        return True

    def audit(self) -> None:
        """Check KV accounting (blocks held + free == total, nothing negative or over), the
        prefill backlog and the sequence cap (running <= ``max_num_seqs``)."""
        pool = self.pool
        held = 0
        for r in self.reqs:
            b = self.nblocks(r.computed_now()) if r.in_decode else r.blocks
            if b < 0 or r.cpu_blocks < 0:
                raise AssertionError(f"{r.req.rid}: negative blocks {b}/{r.cpu_blocks}")
            if r.state is State.FINISHED and (b or r.cpu_blocks):
                raise AssertionError(f"{r.req.rid}: finished but holds {b} blocks")
            if not 0 <= r.shared <= min(b, len(r.keys)):
                raise AssertionError(f"{r.req.rid}: {r.shared} shared of {b} blocks")
            held += b - r.shared
        held += pool.shared_in_use
        pool.check()
        refs = Counter(k for r in self.reqs for k in r.keys[:r.shared])
        if refs != pool.refs():
            raise AssertionError("shared block references do not match what requests hold")
        if held + pool.free != pool.total:
            raise AssertionError(f"held {held} + free {pool.free} != total {pool.total}")
        swapped = sum(r.cpu_blocks + r.swap_out_left for r in self.reqs)
        if abs(swapped * self.kv.block_bytes - self.kv.swap_used_bytes) > 1e-6:
            raise AssertionError(f"swap space {self.kv.swap_used_bytes} B != {swapped} blocks "
                                 "held")
        if len(self.running) > self.cfg.max_num_seqs:
            raise AssertionError(f"{len(self.running)} running > max_num_seqs="
                                 f"{self.cfg.max_num_seqs}")
        backlog = sum(r.ctx - r.computed for r in self.waiting)
        if backlog != self.waiting_prefill:
            raise AssertionError(f"prefill backlog {self.waiting_prefill} != {backlog} waiting")

    # ------------------------------------------------------------------ results
    def finish(self) -> RunResult:
        """Records of every request (unfinished ones as far as they got)."""
        self.player.close()
        if self.trace is not None:
            self.trace.close()
        clock = np.asarray(self.clock)
        for r in self.reqs:
            if r.in_decode:
                self.dec.leave(r, self.n_steps, self.dec_allocated)
            parts = []
            for ch in r.chunks:
                if isinstance(ch, float):
                    parts.append(np.array([ch]))
                else:
                    parts.append(clock[ch[0]:ch[1]])
            r.rec.token_s = np.concatenate(parts) if parts else np.empty(0)
            if r.rec.finished and r.rec.output_tokens != r.req.output_tokens:
                raise AssertionError(f"{r.req.rid}: produced {r.rec.output_tokens} tokens, "
                                     f"script has {r.req.output_tokens}")
        self.stats["end_free_blocks"] = self.pool.free
        self.stats["forward_s"] = float(self.stats["forward_s"])
        return RunResult(records=[r.rec for r in self.reqs], end_s=self.now, stats=self.stats)
