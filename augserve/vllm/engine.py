"""``VLLMEngine``: vLLM's V1 ``LLMEngine`` (in-process core, async scheduling off) stepped one
iteration at a time under an augserve policy, behind the :class:`~augserve.engine.base.Engine`
protocol, with the same :class:`~augserve.records.RequestRecord` output as the simulator.

The model is a Llama-shaped HF config with ``load_format="dummy"`` (random weights, no download)
and token-id prompts (no tokenizer): a prompt's shared prefix has the ids its content keys give
(:func:`augserve.prefix.prefix_token_ids`), so requests share prefixes as in the simulator, and
the rest is drawn per request. The engine plays the request scripts and the tools:

* a segment is one vLLM request with ``max_tokens`` = the segment's tokens (``ignore_eos``,
  temperature 0);
* at its end the policy is asked for a KV mode (``on_intercept``, recorded); stock vLLM can only
  end the request at the call, so every call is played in ``vllm`` mode: the KV goes back to the
  pool (kept by the prefix cache), and when the tool's duration has passed the continuation
  (prompt + generated + returned token ids) is submitted as a new request that reuses the cached
  prefix. ``stats["requested_kv_modes"]`` counts what the policy asked for;
* arrivals and tool durations run on the engine clock: wall time since the start of the run ×
  ``clock_scale`` (1 = real time; 10 = tools and arrival gaps pass 10× faster in wall time, and
  model steps look 10× slower on the engine clock). With ``clock="cpu"`` the clock leaves out
  the time the OS gave to other processes while the engine was working (wall time of each
  engine cycle minus the engine thread's CPU time): on a shared machine this measures the engine
  as if it had its core to itself (the model runs on the engine thread: ``num_threads=1``).

Records: every token is stamped with the engine clock when the step that produced it returns.
``prefix_hit_tokens`` and ``recomputed_tokens`` are counted at each (re-)admission as in the
simulator; ``preemptions`` are vLLM's recompute preemptions.

:meth:`VLLMEngine.start` returns a :class:`VLLMRun` with the simulator's step-wise interface
(``advance`` / ``step`` / ``finish`` / ``state``, :class:`~augserve.engine.base.Run`), so the
RL environment can drive it. The request scripts are played by the simulator's
:class:`~augserve.engine.player.ScriptPlayer`; ``decision_trace`` writes the same per-step
decision trace as the simulator (:mod:`augserve.engine.trace`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augserve.contract import EngineInfo, EngineState, KVMode, kv_decision
from augserve.engine.base import Engine, RunResult, validated
from augserve.engine.player import ScriptPlayer, new_record
from augserve.engine.trace import DecisionTrace
from augserve.prefix import prefix_token_ids
from augserve.request import AugRequest, ToolCall
from augserve.sched.base import Policy
from augserve.vllm import init_cpu_features, require_vllm
from augserve.vllm.runtime import VRuntime

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
_KEY = "augserve_key"


def resolve_model(model: str | Path) -> Path:
    """A model config directory: as given, else relative to the repository root."""
    p = Path(model)
    if not p.is_dir() and not p.is_absolute() and (ROOT / p).is_dir():
        p = ROOT / p
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"model config directory {p} has no config.json")
    return p


class _Live(VRuntime):
    """One scripted request in a live run (the runtime behind its view, and its record)."""

    __slots__ = ("seq", "rec", "prompt_ids", "out_ids", "prev_computed", "seg_seen", "chunks",
                 "run", "ext_id", "rejected")

    def __init__(self, req: AugRequest, seq: int, run: VLLMRun, oracle: bool) -> None:
        super().__init__(req, run.bs, req.arrival_s, oracle)
        self.seq = seq
        self.run = run
        self.rec = new_record(req)
        # the shared prefix from its content keys (as the simulator shares it), the rest its own
        shared = prefix_token_ids(req.prefix, run.vocab)
        rng = np.random.default_rng([run.seed, seq])
        self.prompt_ids: list[int] = shared + rng.integers(
            3, run.vocab, req.prompt_tokens - len(shared)).tolist()
        self.out_ids: list[int] = []  # context after the prompt: generated + returned ids
        self.prev_computed = 0
        self.seg_seen = 0  # tokens seen of the current segment
        self.chunks: list[float] = []  # emission time of every generated token
        self.ext_id = ""
        self.rejected: str | None = None  # the policy's reason, when it turned a segment away

    def first_token_s(self) -> float | None:
        return self.chunks[0] if self.chunks else None

    def on_wait(self, now_s: float, preempted: bool) -> None:
        self.wait_since_s = now_s if preempted else self.submit_s

    def on_preempt(self, computed_tokens: int) -> None:
        self.rec.preemptions += 1
        self.prev_computed = max(self.prev_computed, computed_tokens)
        self.run.stats["preemptions"] += 1

    def ends_request(self) -> bool:
        return self.req.segments[self.seg_idx].call is None

    def on_reject(self, reason: str) -> None:
        self.rejected = reason

    def on_admit(self, hit_tokens: int) -> None:
        self.rec.prefix_hit_tokens += hit_tokens
        self.run.stats["prefix_hit_tokens"] += hit_tokens
        self.rec.recomputed_tokens += max(0, self.prev_computed - hit_tokens)


class VLLMEngine(Engine):
    """The live engine (see the module docstring). Built lazily on the first run, then reused."""

    def __init__(
        self,
        model: str | Path = "data/models/tiny_llama",
        block_size: int = 32,
        num_gpu_blocks: int | None = None,
        kv_cache_gib: float = 0.25,
        max_num_seqs: int = 16,
        max_num_batched_tokens: int = 512,
        max_model_len: int | None = None,
        prefix_caching: bool = True,
        clock_scale: float = 1.0,
        clock: str = "wall",
        max_time_s: float | None = None,
        seed: int = 0,
        dtype: str = "bfloat16",
        profile: str | None = None,
        warmup: bool = True,
        num_threads: int | None = 1,
        decision_trace: str | None = None,
    ) -> None:
        require_vllm()
        if block_size < 1 or block_size % 32:
            raise ValueError(f"block_size={block_size}: vLLM's CPU backend needs a multiple of 32")
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(f"max_num_batched_tokens={max_num_batched_tokens} must be >= "
                             f"max_num_seqs={max_num_seqs} (as vLLM requires)")
        if not clock_scale > 0 or not math.isfinite(clock_scale):
            raise ValueError(f"clock_scale={clock_scale} must be a positive number")
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock={clock!r}: expected 'wall' or 'cpu'")
        if clock == "cpu" and num_threads != 1:
            raise ValueError("clock='cpu' needs num_threads=1 (the model on the engine thread)")
        self.model = resolve_model(model)
        cfg = json.loads((self.model / "config.json").read_text())
        self.vocab = int(cfg.get("vocab_size", 32000))
        self.max_model_len = int(max_model_len or cfg.get("max_position_embeddings", 2048))
        self.block_size = int(block_size)
        self.num_gpu_blocks = num_gpu_blocks
        self.kv_cache_gib = float(kv_cache_gib)
        self.max_num_seqs = int(max_num_seqs)
        self.max_num_batched_tokens = int(max_num_batched_tokens)
        self.prefix_caching = bool(prefix_caching)
        self.clock_scale = float(clock_scale)
        self.clock_kind = clock
        self.max_time_s = math.inf if max_time_s is None else float(max_time_s)
        self.seed = int(seed)
        self.dtype = dtype
        self.profile = profile
        self.do_warmup = bool(warmup)
        self.num_threads = num_threads
        self.decision_trace = decision_trace  # JSONL of per-step decisions (engine/trace.py)
        self.llm: Any = None
        self.sched: Any = None
        self.build_s = math.nan

    # ------------------------------------------------------------------ construction
    def build(self) -> None:
        """Create the vLLM engine (imports vLLM; 3-15 s on CPU) unless it exists."""
        if self.llm is not None:
            return
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the scheduler must be in-process
        if self.num_threads:
            # before vLLM's CPU worker pins torch.set_num_threads: OpenMP threads that spin on a
            # shared machine make steps 100x slower (measured on 2 busy cores)
            os.environ["OMP_NUM_THREADS"] = str(self.num_threads)
            import torch

            torch.set_num_threads(int(self.num_threads))
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE") and self.num_gpu_blocks is None:
            log.warning("VLLM_CPU_KVCACHE_SPACE is set: it overrides kv_cache_gib")
        init_cpu_features()
        t0 = time.perf_counter()
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        from augserve.vllm.scheduler import AugServeScheduler

        args = EngineArgs(
            model=str(self.model), load_format="dummy", skip_tokenizer_init=True,
            enforce_eager=True, block_size=self.block_size,
            enable_prefix_caching=self.prefix_caching, max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens, max_model_len=self.max_model_len,
            async_scheduling=False, seed=self.seed, dtype=self.dtype,
            scheduler_cls=AugServeScheduler, num_gpu_blocks_override=self.num_gpu_blocks,
            kv_cache_memory_bytes=int(self.kv_cache_gib * 2**30),
        )
        self.llm = LLMEngine.from_engine_args(args)
        self.sched = self.llm.engine_core.engine_core.scheduler
        if not hasattr(self.sched, "attach"):
            raise RuntimeError("vLLM did not use augserve's scheduler class")
        self.build_s = time.perf_counter() - t0
        log.info("vLLM engine built in %.1f s: %d KV blocks of %d tokens", self.build_s,
                 self.sched.aug_info.total_blocks, self.block_size)
        if self.do_warmup:
            self.warmup()

    def warmup(self) -> None:
        """A few forward passes of various shapes (first passes are slow: lazy init)."""
        from vllm import SamplingParams

        self.llm.reset_prefix_cache()
        rng = np.random.default_rng(12345)
        lengths = [8, 64, min(self.max_num_batched_tokens, self.max_model_len // 2)]
        for i, n in enumerate(lengths):
            sp = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, seed=0)
            ids = rng.integers(3, self.vocab, n).tolist()
            self.llm.add_request(f"warmup-{i}", {"prompt_token_ids": ids}, sp)
        while self.llm.has_unfinished_requests():
            self.llm.step()
        self.llm.reset_prefix_cache()

    def info(self) -> EngineInfo:
        self.build()
        return self.sched.aug_info

    # ------------------------------------------------------------------ Engine protocol
    def start(self, requests: Sequence[AugRequest], policy: Policy,
              progress: bool = False) -> VLLMRun:
        """A run to drive step by step (:class:`~augserve.engine.base.Run`)."""
        self.build()
        return VLLMRun(self, requests, policy, progress)


class VLLMRun:
    """One live run (a :class:`~augserve.engine.base.Run`): all mutable state lives here."""

    def __init__(self, eng: VLLMEngine, requests: Sequence[AugRequest], policy: Policy,
                 progress: bool) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._sp = SamplingParams
        self._kind = RequestOutputKind.DELTA
        self.eng = eng
        self.llm = eng.llm
        self.sched = eng.sched
        self.policy = policy
        self.bs = eng.block_size
        self.vocab = eng.vocab
        self.seed = eng.seed
        self.scale = eng.clock_scale
        self.cpu_clock = eng.clock_kind == "cpu"
        if self.llm.has_unfinished_requests():
            raise RuntimeError("the vLLM engine still has requests from an earlier run")
        info = self.sched.aug_info
        reqs = validated(requests, eng.max_model_len, info.total_blocks, self.bs)
        self.stats: dict[str, Any] = {
            "steps": 0, "forward_s": 0.0, "prefill_tokens": 0, "decode_tokens": 0,
            "preemptions": 0, "prefix_hit_tokens": 0, "num_gpu_blocks": info.total_blocks,
            "requested_kv_modes": Counter(), "engine": "vllm", "clock_scale": self.scale,
            "clock": eng.clock_kind, "stolen_s": 0.0,
        }
        self.reqs = [_Live(r, i, self, policy.oracle) for i, r in enumerate(reqs)]
        self.player: ScriptPlayer[_Live] = ScriptPlayer(
            self.reqs, policy, arrive=self._submit, resume=self._resume, progress=progress,
            desc=f"vllm {policy.name}")
        self.by_ext: dict[str, _Live] = {}
        self.n_paused = 0
        #: per scheduled step: (StepStat, cycle s, llm.step() s) on the engine clock; the cycle
        #: runs from the previous step's end (or the wake-up after idling) to this step's end
        self.step_log: list[tuple[Any, float, float]] = []
        self._stolen = 0.0  # wall s given to other processes during engine cycles (cpu clock)
        self.sched.step_log = []
        self.llm.reset_prefix_cache()
        from augserve.vllm.deploy import profile_timing

        floor, per_tok = profile_timing(eng.profile)  # wall s at clock_scale 1
        self.trace = (DecisionTrace.for_policy(eng.decision_trace, policy.name)
                      if eng.decision_trace else None)
        self.sched.attach(
            policy, clock=self.clock, runtime_factory=self._runtime,
            paused=lambda: (self.n_paused, 0),
            step_floor_s=None if floor is None else floor * self.scale,
            prefill_s_per_token=None if per_tok is None else per_tok * self.scale,
            decisions=self.trace)
        self.t0 = time.perf_counter()
        self._mark = (self.t0, time.thread_time())  # last step end / wake-up
        self.now = 0.0

    # ------------------------------------------------------------------ clock and views
    def clock(self) -> float:
        return (time.perf_counter() - self.t0 - self._stolen) * self.scale

    def state(self) -> EngineState:
        return self.sched.engine_state()

    def _runtime(self, vreq: Any) -> VRuntime | None:
        """This run's scripted request behind ``vreq``; None for any other request (the
        scheduler then reads its hints, as a server would)."""
        sp = getattr(vreq, "sampling_params", None)
        seq = (getattr(sp, "extra_args", None) or {}).get(_KEY)
        if isinstance(seq, int) and 0 <= seq < len(self.reqs) and self.reqs[seq].vreq is None:
            return self.reqs[seq]
        return None

    # ------------------------------------------------------------------ submissions
    def _submit(self, r: _Live) -> None:
        seg = r.req.segments[r.seg_idx]
        sp = self._sp(max_tokens=seg.gen_tokens, temperature=0.0, ignore_eos=True,
                      seed=self.seed, output_kind=self._kind, extra_args={_KEY: r.seq})
        r.ext_id = f"{r.req.rid}#{r.seg_idx}"
        r.seg_seen = 0
        self.by_ext[r.ext_id] = r
        self.llm.add_request(r.ext_id, {"prompt_token_ids": r.prompt_ids + r.out_ids}, sp)
        reason, r.rejected = r.rejected, None
        if reason is not None:  # the policy turned it away (vLLM aborts it this step)
            if r.seg_idx:
                raise RuntimeError(f"policy {self.policy.name} rejected {r.req.rid} after it "
                                   "ran: Reject is an answer to a new arrival only")
            del self.by_ext[r.ext_id]
            r.vreq = None
            self.player.reject(r, r.req.arrival_s, reason)

    def _resume(self, r: _Live, t_ret: float, call: ToolCall) -> None:
        """``r``'s tool returned at ``t_ret`` (recorded by the player): submit the next segment
        with the returned tokens appended."""
        self.n_paused -= 1
        r.paused = False
        rng = np.random.default_rng([self.seed, r.seq, r.seg_idx])  # seg_idx: the next segment
        r.out_ids.extend(rng.integers(3, self.vocab, call.return_tokens).tolist())
        r.submit_s = t_ret
        r.wait_since_s = t_ret
        self._submit(r)

    def _segment_end(self, r: _Live, t: float) -> None:
        vreq = r.vreq
        if vreq is not None:
            r.prev_computed = max(r.prev_computed, int(vreq.num_computed_tokens))
        r.gen_before += r.seg_seen
        r.ctx_between = r.req.prompt_tokens + len(r.out_ids)
        r.vreq = None
        self.by_ext.pop(r.ext_id, None)
        if self.player.end_segment(r, t) is None:  # the last segment: the request is done
            return
        r.paused = True
        self.n_paused += 1
        mode = kv_decision(self.policy.on_intercept(r.view, self.state())).mode
        self.stats["requested_kv_modes"][mode.value] += 1
        r.rec.kv_modes.append(KVMode.VLLM.value)  # what stock vLLM did (see module docstring)
        if self.trace is not None:
            self.trace.kv(r.req.rid, KVMode.VLLM.value)

    # ------------------------------------------------------------------ stepping
    def decision_pending(self) -> bool:
        """A waiting request could be admitted in the next step (the policy decides)."""
        s = self.sched
        return (len(s.waiting) > 0 and s.kv_cache_manager.block_pool.get_num_free_blocks() > 0
                and len(s.running) < s.max_num_running_reqs)

    def advance(self) -> bool:
        """Run until a step needs a policy decision (True: call ``step()``), or the end."""
        player = self.player
        while not player.all_finished():
            self.now = self.clock()
            player.play_due(self.now)
            if self.now >= self.eng.max_time_s:
                return False
            if not self.llm.has_unfinished_requests():
                nxt = player.next_event_time()
                if nxt is None:
                    raise RuntimeError("deadlock: requests unfinished and no event pending")
                nxt = min(nxt, self.eng.max_time_s)
                time.sleep(max(0.0, (nxt - self.clock()) / self.scale))
                self._mark = (time.perf_counter(), time.thread_time())
                continue
            if self.decision_pending():
                return True
            self.step()
        return False

    def step(self) -> None:
        """One vLLM iteration (schedule, forward pass, outputs); stamps the new tokens."""
        log_before = len(self.sched.step_log)
        steps_before = len(self.step_log)
        w0, c0 = time.perf_counter(), time.thread_time()
        outs = self.llm.step()
        w1, c1 = time.perf_counter(), time.thread_time()
        wm, cm = self._mark
        stolen = step_stolen = 0.0
        if self.cpu_clock:
            stolen = max(0.0, (w1 - wm) - (c1 - cm))
            step_stolen = max(0.0, (w1 - w0) - (c1 - c0))
            self._stolen += stolen
        dt = (w1 - w0 - step_stolen) * self.scale
        cycle = (w1 - wm - stolen) * self.scale
        self._mark = (w1, c1)
        t = self.now = self.clock()
        st = self.stats
        if len(self.sched.step_log) > log_before:
            stat = self.sched.step_log[-1]
            st["steps"] += 1
            st["forward_s"] += dt
            st["prefill_tokens"] += stat.prefill_tokens
            st["decode_tokens"] += stat.num_decode
            self.step_log.append((stat, cycle, dt))
            del self.sched.step_log[:]
        for o in outs:
            r = self.by_ext.get(o.request_id)
            if r is None:
                continue
            new = len(o.outputs[0].token_ids) if o.outputs else 0
            if new:
                if r.seg_seen == 0:
                    r.rec.seg_start_idx.append(len(r.chunks))
                    r.rec.seg_first_s.append(t)
                r.chunks.extend([t] * new)
                r.out_ids.extend(int(x) for x in o.outputs[0].token_ids)
                r.seg_seen += new
            if o.finished:
                if r.rejected is not None:  # a preempted request turned away
                    raise RuntimeError(f"policy {self.policy.name} rejected {r.req.rid} after "
                                       "it ran: Reject is an answer to a new arrival only")
                want = r.req.segments[r.seg_idx].gen_tokens
                if r.seg_seen != want:
                    raise AssertionError(f"{r.req.rid}: segment {r.seg_idx} produced "
                                         f"{r.seg_seen} tokens, script has {want}")
                self._segment_end(r, t)
        if self.trace is not None and len(self.step_log) > steps_before:  # a step ran
            self.trace.flush(self.stats["steps"], t)

    def finish(self) -> RunResult:
        """Records of every request (unfinished ones as far as they got); aborts leftovers."""
        self.player.close()
        if self.trace is not None:
            self.trace.close()
        end = self.clock()
        live = list(self.by_ext)
        if live:
            with contextlib.suppress(Exception):
                self.llm.abort_request(live)
            while self.llm.has_unfinished_requests():
                self.llm.step()
        for r in self.reqs:
            r.rec.token_s = np.asarray(r.chunks, dtype=float)
            r.vreq = None
        self.stats["requested_kv_modes"] = dict(self.stats["requested_kv_modes"])
        self.stats["forward_s"] = float(self.stats["forward_s"])
        self.stats["wall_s"] = end / self.scale + self._stolen
        self.stats["stolen_s"] = self._stolen
        self.sched.detach()  # drop references to this run's requests
        return RunResult(records=[r.rec for r in self.reqs], end_s=end, stats=self.stats)


def make_vllm_engine(**kwargs: Any) -> VLLMEngine:
    """Hydra target for ``engine=vllm`` (see ``conf/engine/vllm.yaml``)."""
    require_vllm()
    return VLLMEngine(**kwargs)


__all__ = ["VLLMEngine", "VLLMRun", "make_vllm_engine", "resolve_model"]
