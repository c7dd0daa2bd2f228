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
  running set and prefills only the returned tokens.
* ``discard``: the blocks are freed; on return the context is recomputed in chunks.
* ``swap``: the blocks are copied to CPU at up to ``swap_budget_blocks`` a step (from the PCIe
  bandwidth and the last step's duration), freeing GPU blocks as they go; on return the request
  is re-admitted, its blocks are copied back within the same per-step budget, then it prefills
  the returned tokens. Copies overlap compute (InferCept's budgeted swap), so they add no time.

Speed: decoding requests are tracked lazily (a request's tokens are derived from the global step
counter, not updated one by one), so a step costs O(events), not O(batch). When a stretch of
decode-only steps has no event (no arrival, tool return, segment end, prefill or block
shortage), the whole stretch is advanced with one vectorized cost evaluation; results are
identical to stepping (``skip_stretches=False``).

Units: seconds, tokens, blocks.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augserve.contract import EngineInfo, EngineState, KVMode, RequestView, State
from augserve.engine.base import Engine, RunResult, next_event_time, validated
from augserve.engine.cost import CostModel, LinearCostModel, Profile
from augserve.engine.kv import BlockPool
from augserve.records import RequestRecord
from augserve.request import AugRequest
from augserve.sched.base import Policy

_STRETCH_CHUNK = 1024  # steps evaluated at once when skipping a decode-only stretch


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


class _Req:
    """Engine-side runtime state of one request (the policy sees it through RequestView)."""

    __slots__ = (
        "req", "rec", "state", "seg_idx", "seg_gen", "ctx", "computed", "blocks", "cpu_blocks",
        "submit_s", "wait_since_s", "preempted", "mode", "tool_durations", "return_lengths",
        "current_tool", "chunks", "in_decode", "j0", "c0", "g0", "epoch", "prev_computed",
        "recomp_left", "swap_out_left", "swap_in_left", "view", "seq", "gen", "run",
    )

    def __init__(self, req: AugRequest, seq: int, oracle: bool, run: SimRun) -> None:
        self.req = req
        self.seq = seq
        self.run = run
        self.gen = 0  # tokens generated so far (materialized part)
        self.rec = RequestRecord(
            rid=req.rid, aug_type=req.aug_type, arrival_s=req.arrival_s,
            prompt_tokens=req.prompt_tokens, expected_output_tokens=req.output_tokens,
            num_calls=req.num_calls,
        )
        self.state = State.WAITING
        self.seg_idx = 0
        self.seg_gen = 0  # tokens generated in the current segment (materialized part)
        self.ctx = req.prompt_tokens  # tokens the model knows (prompt + generated + returned)
        self.computed = 0  # tokens whose KV exists (GPU or CPU)
        self.blocks = 0  # GPU blocks held
        self.cpu_blocks = 0
        self.submit_s = req.arrival_s
        self.wait_since_s = req.arrival_s
        self.preempted = False
        self.mode = KVMode.PRESERVE
        self.tool_durations: list[float] = []
        self.return_lengths: list[int] = []
        self.current_tool: str | None = None
        self.chunks: list = []  # token times: floats, or (j0, j1) slices of the step clock
        self.in_decode = False
        self.j0 = self.c0 = self.g0 = 0
        self.epoch = 0
        self.prev_computed = 0  # high-water mark of computed tokens before KV was lost
        self.recomp_left = 0
        self.swap_out_left = 0
        self.swap_in_left = 0
        self.view = RequestView(self, oracle)

    # RequestView reads these; decoding requests are materialized lazily from the step counter.
    def _lag(self) -> int:
        return self.run.k - self.j0 if self.in_decode else 0

    def generated(self) -> int:
        return self.gen + self._lag()

    def context(self) -> int:
        return self.ctx + self._lag()

    def computed_now(self) -> int:
        return self.computed + self._lag()


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

    def run(
        self, requests: Sequence[AugRequest], policy: Policy, progress: bool = False
    ) -> RunResult:
        return SimRun(self, requests, policy, progress).go()

    def start(self, requests: Sequence[AugRequest], policy: Policy) -> SimRun:
        """A run to drive step by step: ``advance()`` to the next decision, ``step()`` it,
        ``finish()`` for the records (the gymnasium env's interface)."""
        return SimRun(self, requests, policy, progress=False)


class SimRun:
    """One simulation: all mutable state of a run lives here."""

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
        self.pool = BlockPool(eng.num_blocks, self.cfg.prefix_caching)
        self.now = 0.0
        self.k = 0  # steps done
        self.clock: list[float] = []  # end time of each step
        self.last_dt = 0.0
        # sets
        self.running: dict[_Req, None] = {}  # admission order; tail = preemption victim
        self.prefill: dict[_Req, None] = {}  # running requests with prefill work, in order
        self.swapping_in: dict[_Req, None] = {}
        self.swapping_out: dict[_Req, None] = {}
        self.paused: set[_Req] = set()
        self.paused_blocks = 0
        self.waiting: dict[_Req, None] = {}
        self.waiting_prefill = 0  # Σ (ctx - computed) over waiting requests (fixed while waiting)
        # lazy decode set
        self.n_dec = 0
        self.dec_ctx = 0  # Σ (computed + 1) over decoding requests at the next step
        self.bucket = [0] * self.bs  # decoding requests needing a new block at step s: s % bs
        self.seg_heap: list = []  # (k at which the segment ends, seq, req, epoch)
        self.tool_heap: list = []  # (return time, seq, req)
        self.next_arrival = 0
        self.swap_used_bytes = 0.0
        self.n_finished = 0
        self.done_log: list[_Req] = []  # requests finished since a driver last cleared it
        self.stats = {
            "steps": 0, "forward_s": 0.0, "recompute_s": 0.0, "prefill_tokens": 0,
            "decode_tokens": 0, "recompute_tokens": 0, "preemptions": 0, "swap_out_blocks": 0,
            "swap_in_blocks": 0, "prefix_hit_tokens": 0, "stretch_steps": 0,
            "num_gpu_blocks": eng.num_blocks,
        }
        self.dec_allocated = False  # this step's decode blocks are allocated already
        self.pbar = None
        if progress:
            from tqdm import tqdm

            self.pbar = tqdm(total=len(self.reqs), desc=f"sim {policy.name}", unit="req",
                             leave=False)

    # ------------------------------------------------------------------ helpers
    def state(self) -> EngineState:
        return EngineState(
            now_s=self.now, free_blocks=self.pool.free, paused_blocks=self.paused_blocks,
            num_running=len(self.running), num_waiting=len(self.waiting),
            num_paused=len(self.paused), last_step_s=self.last_dt, step=self.k,
            running_prefill_tokens=sum(r.ctx - r.computed for r in self.prefill),
            waiting_prefill_tokens=self.waiting_prefill,
            swap_budget_blocks=self.swap_budget(), info=self.info,
        )

    def swap_budget(self) -> int:
        bw = self.eng.swap_bytes_per_s
        if math.isinf(bw):
            return 1 << 30
        dt = self.last_dt if self.last_dt > 0 else self.info.step_floor_s
        return max(1, int(bw * dt / (self.info.kv_bytes_per_token * self.bs)))

    def nblocks(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def enqueue(self, r: _Req, t: float) -> None:
        r.state = State.WAITING
        r.wait_since_s = t
        self.waiting[r] = None
        self.waiting_prefill += r.ctx - r.computed
        self.policy.on_enqueue(r.view, self.state())

    # -- lazy decode set
    def dec_join(self, r: _Req) -> None:
        """``r`` decodes from the next step on (``self.k``)."""
        r.in_decode = True
        r.j0, r.c0, r.g0 = self.k, r.computed, r.seg_gen
        r.epoch += 1
        self.n_dec += 1
        self.dec_ctx += r.computed + 1
        self.bucket[(r.j0 - r.c0) % self.bs] += 1
        seg_len = r.req.segments[r.seg_idx].gen_tokens
        heapq.heappush(self.seg_heap, (self.k + seg_len - r.seg_gen, r.seq, r, r.epoch))

    def dec_leave(self, r: _Req) -> None:
        """Materialize ``r``'s lazily decoded tokens up to now and take it out of the set."""
        steps = self.k - r.j0
        r.in_decode = False
        r.epoch += 1
        self.n_dec -= 1
        self.dec_ctx -= r.c0 + steps + 1
        self.bucket[(r.j0 - r.c0) % self.bs] -= 1
        if steps:
            r.computed = r.c0 + steps
            r.ctx += steps
            r.gen += steps
            r.seg_gen = r.g0 + steps
            r.blocks = self.nblocks(r.computed)
            r.chunks.append((r.j0, self.k))
        if self.dec_allocated and (r.j0 - r.c0) % self.bs == self.k % self.bs:
            r.blocks += 1  # the block allocated for this step's token, which will not come

    # ------------------------------------------------------------------ main loop
    def go(self) -> RunResult:
        while self.advance():
            self.step()
        return self.finish()

    def decision_pending(self) -> bool:
        """A waiting request could be admitted in the next step: the policy decides something."""
        return (bool(self.waiting) and self.pool.free > 0
                and len(self.running) < self.cfg.max_num_seqs)

    def advance(self) -> bool:
        """Run until the next step that needs a policy decision. True: call ``step()`` next;
        False: the run is over (everything finished, or the time limit)."""
        n = len(self.reqs)
        cfg = self.cfg
        while self.n_finished < n:
            self.process_events()
            if self.now >= cfg.max_time_s:
                return False
            if not self.running and not self.swapping_out and not self.can_admit_anything():
                nxt = self.next_event_time()
                if nxt is None:
                    if self.waiting:
                        raise RuntimeError("deadlock: waiting requests can never be admitted")
                    return False
                self.now = max(self.now, min(nxt, cfg.max_time_s))
                continue
            if (cfg.skip_stretches and self.n_dec and not self.prefill and not self.waiting
                    and not self.swapping_in and not self.swapping_out):
                if self.stretch():
                    continue
            if self.decision_pending():
                return True
            self.step()
        return False

    def next_event_time(self) -> float | None:
        return next_event_time(self.reqs, self.next_arrival, self.tool_heap)

    def process_events(self) -> None:
        now = self.now
        reqs = self.reqs
        while self.next_arrival < len(reqs) and reqs[self.next_arrival].req.arrival_s <= now:
            r = reqs[self.next_arrival]
            self.next_arrival += 1
            self.enqueue(r, r.req.arrival_s)
        while self.tool_heap and self.tool_heap[0][0] <= now:
            t_ret, _, r = heapq.heappop(self.tool_heap)
            self.tool_return(r, t_ret)

    def can_admit_anything(self) -> bool:
        return bool(self.waiting) and self.pool.free > 0

    # ------------------------------------------------------------------ one step
    def step(self) -> None:
        """One engine iteration (one forward pass, or a jump to the next event if idle)."""
        self._step()
        if self.cfg.audit:
            self.audit()

    def _step(self) -> None:
        pool = self.pool
        bs = self.bs
        cfg = self.cfg
        preempted = False
        # 1. decodes: blocks for this step's new tokens
        need = self.bucket[self.k % bs]
        while need > pool.free:
            self.preempt(next(reversed(self.running)))
            preempted = True
            need = self.bucket[self.k % bs]
        pool.allocate(need)
        self.dec_allocated = True
        # 2. running prefills, in admission order
        sched: list[tuple[_Req, int]] = []
        if self.prefill or self.waiting:
            state = self.state()
            self.policy.on_step(state)
            budget = int(self.policy.token_budget(state))
            budget = max(1, min(budget, cfg.max_num_batched_tokens))
            room = budget - self.n_dec
            for r in list(self.prefill):
                if room <= 0:
                    break
                if r.state is not State.RUNNING:  # preempted earlier in this loop
                    continue
                if r.swap_in_left:
                    continue
                c = min(r.ctx - r.computed, room)
                add = self.nblocks(r.computed + c) - r.blocks
                while add > pool.free and r.state is State.RUNNING:
                    self.preempt(next(reversed(self.running)))
                    preempted = True
                if r.state is not State.RUNNING:
                    continue
                pool.allocate(add)
                r.blocks += add
                sched.append((r, c))
                room -= c
            # 3. admissions
            if not preempted and room > 0:
                self.admit(room, sched)
        self.dec_allocated = False
        # swap transfers (each direction has its own per-step budget: PCIe is full duplex)
        swapping = bool(self.swapping_in or self.swapping_out)
        if self.swapping_in:
            self.do_swap_in(self.swap_budget())
        if self.swapping_out:
            self.do_swap_out(self.swap_budget())
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
        dec_ctx = self.dec_ctx
        n_tokens = self.n_dec + pf_tokens
        if n_tokens == 0:
            # only swap traffic or nothing schedulable: wait for the next event
            nxt = self.next_event_time()
            if swapping:  # a step of pure copying: it lasts as long as the cheapest step
                self.tick(self.info.step_floor_s, 0, 0, 0)
            elif nxt is not None:
                self.now = max(self.now, nxt)
            else:
                raise RuntimeError("deadlock: nothing can run and no event is pending")
            return
        dt = self.eng.cost.step_time(n_tokens, dec_ctx, pf_attn)
        self.stats["recompute_s"] += dt * rc_tokens / n_tokens
        self.stats["prefill_tokens"] += pf_tokens
        self.stats["recompute_tokens"] += rc_tokens
        self.tick(dt, self.n_dec, dec_ctx, 1)
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
        self.k += 1
        self.stats["steps"] += 1
        self.stats["forward_s"] += dt if steps else 0.0
        self.stats["decode_tokens"] += n_dec
        self.dec_ctx += self.n_dec

    def need(self, r: _Req, room: int) -> tuple[int, int, int]:
        """(prefix-hit blocks, chunk tokens, new blocks) to admit ``r`` with ``room`` tokens."""
        hit = 0
        if r.computed == 0 and self.pool.caching:
            hit = min(self.pool.cached(r.req.rid), (r.ctx - 1) // self.bs)
        base = r.computed if r.computed else hit * self.bs
        c = min(r.ctx - base, room)
        return hit, c, self.nblocks(base + c) - r.blocks - hit

    def candidates(self, room_ref: list[int]):
        """Waiting requests in the policy's order (lazily)."""
        def fits(view: RequestView) -> bool:
            hit, _, add = self.need(view._r, room_ref[0])
            return add <= self.pool.free - hit
        for v in self.policy.candidates(self.state(), fits):
            yield v._r

    def admit(self, room: int, sched: list) -> int:
        pool = self.pool
        cfg = self.cfg
        pol = self.policy
        room_ref = [room]
        for r in self.candidates(room_ref):
            if room_ref[0] <= 0 or len(self.running) >= cfg.max_num_seqs:
                break
            if r.state is not State.WAITING:
                raise RuntimeError(f"policy offered {r.req.rid}, which is not waiting")
            hit, c, add = self.need(r, room_ref[0])
            if add > pool.free - hit:
                break  # head-of-line: vLLM stops admitting at the first request that does not fit
            self.waiting_prefill -= r.ctx - r.computed  # before a prefix hit changes computed
            if hit:
                pool.touch(r.req.rid, hit)
                r.blocks += hit
                r.computed = hit * self.bs
                r.rec.prefix_hit_tokens += r.computed
                self.stats["prefix_hit_tokens"] += r.computed
            r.recomp_left = max(0, r.prev_computed - r.computed)
            pool.allocate(add)
            r.blocks += add
            del self.waiting[r]
            r.state = State.RUNNING
            r.preempted = False
            self.running[r] = None
            self.prefill[r] = None
            pol.on_admit(r.view)
            if r.cpu_blocks:
                r.swap_in_left = r.cpu_blocks
                self.swapping_in[r] = None
                continue  # compute starts once its KV is back
            sched.append((r, c))
            room_ref[0] -= c
        return room_ref[0]

    def do_swap_in(self, budget: int) -> None:
        for r in list(self.swapping_in):
            if budget <= 0:
                break
            x = min(budget, r.swap_in_left)
            r.swap_in_left -= x
            r.cpu_blocks -= x
            self.swap_used_bytes -= x * self.bs * self.info.kv_bytes_per_token
            budget -= x
            self.stats["swap_in_blocks"] += x
            if not r.swap_in_left:
                del self.swapping_in[r]

    def do_swap_out(self, budget: int) -> None:
        for r in list(self.swapping_out):
            if budget <= 0:
                break
            x = min(budget, r.swap_out_left)
            r.swap_out_left -= x
            r.blocks -= x
            r.cpu_blocks += x
            self.paused_blocks -= x
            self.pool.release(r.req.rid, x, 0)
            budget -= x
            self.stats["swap_out_blocks"] += x
            if not r.swap_out_left:
                del self.swapping_out[r]

    def preempt(self, v: _Req) -> None:
        """Preempt ``v`` by recompute (vLLM V1): free its blocks; it waits at the front."""
        if v.in_decode:
            self.dec_leave(v)
        del self.running[v]
        self.prefill.pop(v, None)
        full = v.computed // self.bs
        if v in self.swapping_in:
            # the copy back is abandoned: the CPU copy is dropped and the GPU blocks hold an
            # incomplete context, so nothing of it is cached; recompute covers it all
            del self.swapping_in[v]
            self.swap_used_bytes -= v.cpu_blocks * self.bs * self.info.kv_bytes_per_token
            v.cpu_blocks = 0
            v.swap_in_left = 0
            full = 0
        self.pool.release(v.req.rid, v.blocks, full)
        v.prev_computed = max(v.prev_computed, v.computed)
        v.blocks = 0
        v.computed = 0
        v.recomp_left = 0
        v.preempted = True
        v.rec.preemptions += 1
        self.stats["preemptions"] += 1
        self.enqueue(v, self.now)

    # ------------------------------------------------------------------ tokens and tools
    def emit(self, r: _Req, t: float) -> None:
        """``r`` finished a prefill at ``t``: it samples one token."""
        if r.seg_gen == 0:
            r.rec.seg_start_idx.append(self.token_count(r))
        r.chunks.append(t)
        r.ctx += 1
        r.gen += 1
        r.seg_gen += 1
        if r.seg_gen == r.req.segments[r.seg_idx].gen_tokens:
            self.segment_end(r)
        else:
            self.dec_join(r)

    def token_count(self, r: _Req) -> int:
        n = 0
        for ch in r.chunks:
            n += 1 if isinstance(ch, float) else ch[1] - ch[0]
        return n

    def fire_segment_ends(self) -> None:
        heap = self.seg_heap
        k = self.k
        while heap and heap[0][0] <= k:
            _, _, r, ep = heapq.heappop(heap)
            if ep != r.epoch or not r.in_decode:
                continue
            self.dec_leave(r)
            self.segment_end(r)

    def segment_end(self, r: _Req) -> None:
        seg = r.req.segments[r.seg_idx]
        t = self.now
        del self.running[r]
        self.prefill.pop(r, None)
        if seg.call is None:
            self.finish_request(r, t)
            return
        r.rec.tool_start_s.append(t)
        r.current_tool = seg.call.kind
        r.state = State.PAUSED
        mode = KVMode(self.policy.on_intercept(r.view, self.state()))
        if mode is KVMode.SWAP:
            need = r.blocks * self.bs * self.info.kv_bytes_per_token
            if self.swap_used_bytes + need > self.cfg.swap_space_bytes:
                mode = KVMode.DISCARD  # CPU swap space is full
        r.mode = mode
        r.rec.kv_modes.append(mode.value)
        self.paused.add(r)
        if mode is KVMode.PRESERVE:
            self.paused_blocks += r.blocks
        elif mode is KVMode.SWAP:
            self.paused_blocks += r.blocks
            r.swap_out_left = r.blocks
            self.swap_used_bytes += r.blocks * self.bs * self.info.kv_bytes_per_token
            self.swapping_out[r] = None
        else:  # vllm, discard: the KV goes back to the pool (the prefix cache may keep it)
            self.pool.release(r.req.rid, r.blocks, r.computed // self.bs)
            r.prev_computed = max(r.prev_computed, r.computed)
            r.blocks = 0
            r.computed = 0
        heapq.heappush(self.tool_heap, (t + seg.call.duration_s, r.seq, r))

    def tool_return(self, r: _Req, t_ret: float) -> None:
        seg = r.req.segments[r.seg_idx]
        r.rec.tool_return_s.append(t_ret)
        r.tool_durations.append(seg.call.duration_s)
        r.return_lengths.append(seg.call.return_tokens)
        self.policy.on_tool_return(r.view, seg.call.duration_s)
        self.paused.discard(r)
        r.ctx += seg.call.return_tokens
        r.seg_idx += 1
        r.seg_gen = 0
        r.current_tool = None
        if r.mode is KVMode.PRESERVE:
            self.paused_blocks -= r.blocks
            r.state = State.RUNNING
            self.running[r] = None
            self.prefill[r] = None
            return
        if r.mode is KVMode.SWAP:
            if r in self.swapping_out:  # the call ended before the copy out did
                del self.swapping_out[r]
                self.swap_used_bytes -= (r.swap_out_left * self.bs
                                         * self.info.kv_bytes_per_token)
                r.swap_out_left = 0
            self.paused_blocks -= r.blocks  # blocks not yet copied out stay on the GPU
            if r.cpu_blocks == 0:  # nothing left the GPU: continue as if preserved
                r.state = State.RUNNING
                self.running[r] = None
                self.prefill[r] = None
                return
            # re-admission allocates blocks for the CPU part and copies it back; the part that
            # never left stays allocated meanwhile
        r.submit_s = t_ret
        r.preempted = False
        self.enqueue(r, t_ret)

    def finish_request(self, r: _Req, t: float) -> None:
        r.state = State.FINISHED
        self.pool.release(r.req.rid, r.blocks, r.computed // self.bs)
        r.blocks = 0
        r.rec.finished = True
        r.rec.finish_s = t
        self.n_finished += 1
        self.done_log.append(r)
        self.policy.on_leave(r.view)
        if self.pbar is not None:
            self.pbar.update(1)

    # ------------------------------------------------------------------ stretches
    def stretch(self) -> bool:
        """Advance a run of decode-only steps with no event at once. False if under 2 steps."""
        heap = self.seg_heap
        while heap and (heap[0][3] != heap[0][2].epoch or not heap[0][2].in_decode):
            heapq.heappop(heap)
        if not heap:
            return False
        m_seg = heap[0][0] - self.k  # steps until the first segment end fires
        if m_seg < 2:
            return False
        nxt = self.next_event_time()
        t_lim = min(nxt if nxt is not None else math.inf, self.cfg.max_time_s)
        m = min(m_seg, _STRETCH_CHUNK)
        ks = np.arange(self.k, self.k + m)
        # blocks: stop before the first step whose new blocks do not fit
        need = np.asarray(self.bucket)[ks % self.bs].cumsum()
        m = min(m, int(np.searchsorted(need, self.pool.free, side="right")))
        if m < 2:
            return False
        nd = self.n_dec
        ctx = self.dec_ctx + nd * np.arange(m, dtype=np.int64)
        dts = self.eng.cost.step_times(np.full(m, nd, dtype=np.int64), ctx, np.zeros(m))
        t = np.cumsum(np.concatenate(([self.now], dts)))
        # step j (j >= 1) starts at t[j]; it may run only if no event is due by then
        m = min(m, 1 + int(np.searchsorted(t[1:m], t_lim, side="left")))
        if m < 2:
            return False
        self.pool.allocate(int(need[m - 1]))
        self.clock.extend(t[1:m + 1].tolist())
        self.now = float(t[m])
        self.last_dt = float(dts[m - 1])
        self.k += m
        self.dec_ctx += nd * m
        st = self.stats
        st["steps"] += m
        st["stretch_steps"] += m
        st["forward_s"] += float(dts[:m].sum())
        st["decode_tokens"] += nd * m
        self.fire_segment_ends()
        return True

    def audit(self) -> None:
        """Check KV accounting (blocks held + free == total, nothing negative or over) and the
        prefill backlog."""
        pool = self.pool
        held = 0
        for r in self.reqs:
            b = self.nblocks(r.computed_now()) if r.in_decode else r.blocks
            if b < 0 or r.cpu_blocks < 0:
                raise AssertionError(f"{r.req.rid}: negative blocks {b}/{r.cpu_blocks}")
            if r.state is State.FINISHED and (b or r.cpu_blocks):
                raise AssertionError(f"{r.req.rid}: finished but holds {b} blocks")
            held += b
        pool.check()
        if held + pool.free != pool.total:
            raise AssertionError(f"held {held} + free {pool.free} != total {pool.total}")
        swapped = sum(r.cpu_blocks + r.swap_out_left for r in self.reqs)
        if abs(swapped * self.bs * self.info.kv_bytes_per_token - self.swap_used_bytes) > 1e-6:
            raise AssertionError(f"swap space {self.swap_used_bytes} B != {swapped} blocks held")
        backlog = sum(r.ctx - r.computed for r in self.waiting)
        if backlog != self.waiting_prefill:
            raise AssertionError(f"prefill backlog {self.waiting_prefill} != {backlog} waiting")

    # ------------------------------------------------------------------ results
    def finish(self) -> RunResult:
        """Records of every request (unfinished ones as far as they got)."""
        if self.pbar is not None:
            self.pbar.close()
        clock = np.asarray(self.clock)
        for r in self.reqs:
            if r.in_decode:
                self.dec_leave(r)
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
