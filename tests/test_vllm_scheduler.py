"""augserve's scheduler subclass inside vLLM's real V1 scheduler (needs the vllm extra).

One in-process vLLM engine (tiny dummy Llama, 23 usable KV blocks of 32 tokens, 4 sequences,
256-token cap) is shared by the tests; each attaches its own policy and drives ``step()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm]')")

from augserve.contract import EngineState, KVMode, RequestView  # noqa: E402
from augserve.sched.base import Policy  # noqa: E402
from augserve.sched.keyed import KeyedPolicy  # noqa: E402

BLOCKS = 24  # allocated; one is vLLM's null block


@pytest.fixture(scope="module")
def llm():
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    import torch
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    from augserve.vllm.engine import resolve_model

    torch.set_num_threads(1)
    args = EngineArgs(
        model=str(resolve_model("data/models/tiny_llama")), load_format="dummy",
        skip_tokenizer_init=True, enforce_eager=True, block_size=32, enable_prefix_caching=True,
        max_num_seqs=4, max_num_batched_tokens=256, max_model_len=512, async_scheduling=False,
        seed=0, num_gpu_blocks_override=BLOCKS, kv_cache_memory_bytes=64 << 20,
        scheduler_cls="augserve.vllm.AugServeScheduler",
    )
    engine = LLMEngine.from_engine_args(args)
    yield engine
    del engine


def sched_of(llm):
    return llm.engine_core.engine_core.scheduler


def add(llm, rid: str, n_prompt: int, max_tokens: int = 4, **extra) -> None:
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, seed=0,
                        extra_args=extra or None)
    ids = [(hash(rid) + i) % 4000 + 3 for i in range(n_prompt)]
    llm.add_request(rid, {"prompt_token_ids": ids}, sp)


def drain(llm) -> None:
    while llm.has_unfinished_requests():
        llm.step()
    llm.reset_prefix_cache()


def new_ids(sched) -> list[str]:
    """External ids of the requests admitted by the last schedule() (vLLM appends a suffix)."""
    return [r.req_id.rsplit("-", 1)[0] for r in sched.last_output.scheduled_new_reqs]


class Recorder(KeyedPolicy):
    """Static keys from the ``x_rank`` client hint; fixed budget; records what it is shown."""

    name = "recorder"

    def __init__(self, budget: int = 256, probe: Callable[[], int] | None = None) -> None:
        self.budget = budget
        self.probe = probe
        self.states: list[tuple[EngineState, int | None]] = []
        self.views: list[dict] = []

    def priority(self, view: RequestView, state: EngineState) -> tuple:
        self.views.append({"rid": view.rid, "aug_type": view.aug_type,
                           "calls_done": view.calls_done, "tool_s": view.observed_tool_s,
                           "tool": view.current_tool, "meta": dict(view.metadata),
                           "preempted": view.preempted, "prompt": view.prompt_tokens})
        return (view.metadata.get("x_rank", 0), view.submit_s)

    def token_budget(self, state: EngineState) -> int:
        self.states.append((state, self.probe() if self.probe else None))
        return self.budget

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM


def test_policy_order_is_honoured_over_fcfs(llm) -> None:
    s = sched_of(llm)
    pol = Recorder()
    s.attach(pol)
    add(llm, "a", 40, x_rank=3)
    add(llm, "b", 40, x_rank=1)
    add(llm, "c", 40, x_rank=2)
    llm.step()
    assert new_ids(s) == ["b", "c", "a"]  # FCFS would be a, b, c
    drain(llm)


def test_budget_bounds_admissions_and_chunks(llm) -> None:
    s = sched_of(llm)
    pol = Recorder(budget=80)
    s.attach(pol)
    for rid, rank in (("a", 3), ("b", 1), ("c", 2)):
        add(llm, rid, 40, max_tokens=8, x_rank=rank)
    llm.step()
    out = s.last_output
    assert s.max_num_scheduled_tokens == 80
    assert out.total_num_scheduled_tokens == 80
    assert new_ids(s) == ["b", "c"]  # 40 + 40 tokens: "a" waits
    drain(llm)
    # one long prompt: chunks of exactly the budget; a budget above the cap is clipped
    pol = Recorder(budget=48)
    s.attach(pol)
    add(llm, "long", 200)
    llm.step()
    assert s.last_output.num_scheduled_tokens == {s.last_output.scheduled_new_reqs[0].req_id: 48}
    llm.step()
    assert s.last_output.total_num_scheduled_tokens == 48
    drain(llm)
    s.attach(Recorder(budget=10**6))
    add(llm, "long2", 400)
    llm.step()
    assert s.max_num_scheduled_tokens == 256
    assert s.last_output.total_num_scheduled_tokens == 256
    drain(llm)


def test_decodes_always_run_under_a_tiny_budget(llm) -> None:
    s = sched_of(llm)
    pol = Recorder(budget=256)
    s.attach(pol)
    add(llm, "a", 20, max_tokens=6)
    add(llm, "b", 20, max_tokens=6)
    llm.step()
    assert sorted(new_ids(s)) == ["a", "b"]
    pol.budget = 1  # below the number of decoding requests
    add(llm, "c", 20, max_tokens=6)
    llm.step()
    assert s.max_num_scheduled_tokens == 2
    assert s.last_output.total_num_scheduled_tokens == 2  # both decodes ran, "c" waits
    assert new_ids(s) == []
    drain(llm)


def test_policy_sees_free_blocks_and_engine_facts(llm) -> None:
    s = sched_of(llm)
    pool = s.kv_cache_manager.block_pool
    pol = Recorder(probe=pool.get_num_free_blocks)
    info = s.attach(pol)
    assert info.total_blocks == BLOCKS - 1
    assert info.block_size == 32 and info.max_num_seqs == 4
    assert info.max_num_batched_tokens == 256 and info.max_model_len == 512
    add(llm, "a", 100, max_tokens=4)  # 4 blocks
    llm.step()
    add(llm, "b", 10, max_tokens=4)
    llm.step()
    assert len(pol.states) >= 2
    for state, free_now in pol.states:
        assert state.free_blocks == free_now
        assert state.info is info
    first, second = pol.states[0][0], pol.states[1][0]
    assert first.free_blocks == BLOCKS - 1
    assert second.free_blocks == BLOCKS - 1 - 4
    assert second.num_running == 1 and second.num_waiting == 1 and second.step == 2
    assert second.last_step_s > 0
    # the prefill backlog: each request's prompt while it waits, nothing once admitted
    assert first.waiting_prefill_tokens == 100 and second.waiting_prefill_tokens == 10
    assert s.waiting.waiting_prefill == 0
    drain(llm)


class Leaves(Recorder):
    """Recorder that counts what it is told left the engine."""

    def reset(self, info) -> None:
        super().reset(info)
        self.left: list[str] = []

    def on_leave(self, view: RequestView) -> None:
        self.left.append(view.rid.rsplit("-", 1)[0])
        super().on_leave(view)


def test_leaves_are_told_once_finished_or_aborted_anywhere(llm) -> None:
    s = sched_of(llm)
    pol = Leaves()
    s.attach(pol)
    add(llm, "done", 40, max_tokens=2)
    add(llm, "running", 40, max_tokens=50)
    llm.step()
    add(llm, "waiting", 40)
    assert s.waiting.waiting_prefill == 40
    llm.abort_request(["waiting", "running"])  # one aborted in the queue, one while running
    drain(llm)
    assert sorted(pol.left) == ["done", "running", "waiting"]  # each once
    assert s.waiting.waiting_prefill == 0 and not s._rt  # nothing kept for them
    assert not pol._live  # nor in its queue


class Queue(Policy):
    """Owns its queue (FIFO); ``skip``: yield fitting requests before non-fitting ones."""

    name = "queue"

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.q: list[RequestView] = []
        self.fit_calls: dict[str, bool] = {}

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        self.q.append(view)

    def on_admit(self, view: RequestView) -> None:
        self.q = [v for v in self.q if v.rid != view.rid]

    def candidates(self, state: EngineState,
                   fits: Callable[[RequestView], bool]) -> Iterator[RequestView]:
        views = list(self.q)
        for v in views:
            self.fit_calls[v.rid.rsplit("-", 1)[0]] = fits(v)
        if self.skip:
            views.sort(key=lambda v: not fits(v))
        yield from views

    def token_budget(self, state: EngineState) -> int:
        return 256

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM


@pytest.mark.parametrize("skip", [False, True])
def test_head_of_line_and_fits(llm, skip: bool) -> None:
    s = sched_of(llm)
    pol = Queue(skip)
    s.attach(pol)
    add(llm, "hog", 500, max_tokens=10)  # 16 blocks (2 prefill steps), then decodes
    llm.step()
    llm.step()
    free = s.kv_cache_manager.block_pool.get_num_free_blocks()
    assert free == BLOCKS - 1 - 16
    add(llm, "big", 300)  # first chunk (255 tokens) needs 8 blocks > 7 free
    add(llm, "small", 40)  # 2 blocks: fits
    pol.fit_calls.clear()
    llm.step()
    assert pol.fit_calls == {"big": False, "small": True}
    if skip:
        assert new_ids(s) == ["small"]
    else:  # vLLM's head-of-line rule: nothing behind "big" is admitted
        assert new_ids(s) == []
    drain(llm)


class Dynamic(Policy):
    """Re-sorts its queue whenever asked for candidates: longest prompt first."""

    name = "dynamic"

    def __init__(self) -> None:
        self.q: dict[str, RequestView] = {}

    def on_enqueue(self, view: RequestView, state: EngineState) -> None:
        self.q[view.rid] = view

    def on_admit(self, view: RequestView) -> None:
        self.q.pop(view.rid, None)

    def on_leave(self, view: RequestView) -> None:
        self.q.pop(view.rid, None)

    def candidates(self, state: EngineState,
                   fits: Callable[[RequestView], bool]) -> Iterator[RequestView]:
        yield from sorted(self.q.values(), key=lambda v: -v.prompt_tokens)

    def token_budget(self, state: EngineState) -> int:
        return 256

    def on_intercept(self, view: RequestView, state: EngineState) -> KVMode:
        return KVMode.VLLM


def test_order_decided_per_step(llm) -> None:
    s = sched_of(llm)
    s.attach(Dynamic())
    add(llm, "short", 10)
    add(llm, "long", 60)
    add(llm, "mid", 30)
    llm.step()
    assert new_ids(s) == ["long", "mid", "short"]
    drain(llm)


def test_request_hints_reach_the_view(llm) -> None:
    s = sched_of(llm)
    pol = Recorder()
    s.attach(pol)
    add(llm, "h", 20, aug_type="qa", tool="search", tool_durations=[0.5, 1.5],
        return_lengths=[7, 9], generated_tokens=30, predicted_output_tokens=12)
    llm.step()
    v = pol.views[-1]
    assert v["aug_type"] == "qa" and v["tool"] == "search"
    assert v["calls_done"] == 2 and v["tool_s"] == (0.5, 1.5)
    assert v["meta"]["predicted_output_tokens"] == 12 and v["prompt"] == 20
    assert not v["preempted"]
    drain(llm)


def test_unusable_hints_are_dropped_and_counted_not_raised(llm) -> None:
    """Without the API server's validator (the Python API here) a malformed hint must not
    raise inside the scheduler: the request runs hint-less and is counted."""
    s = sched_of(llm)
    pol = Recorder()
    s.attach(pol)
    before = getattr(s, "hints_ignored", 0)  # (the old code raised at the first add below)
    add(llm, "bad", 20, tool_durations="abc", aug_type="qa", x_rank=1)
    add(llm, "neg", 20, tool_durations=[-5.0], return_lengths=[3])
    add(llm, "ok", 20, aug_type="math", tool_durations=[0.5], return_lengths=[2])
    drain(llm)
    assert s.hints_ignored - before == 2
    seen = {v["rid"].rsplit("-", 1)[0]: v for v in pol.views}
    assert seen["bad"]["aug_type"] == "other" and seen["bad"]["meta"] == {}
    assert seen["bad"]["calls_done"] == 0 and seen["neg"]["tool_s"] == ()
    assert seen["ok"]["aug_type"] == "math" and seen["ok"]["tool_s"] == (0.5,)


def test_hint_validator_loads_in_both_model_runners_and_rejects_bad_hints() -> None:
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.sample.logits_processor import _load_custom_logitsprocs
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs

    from augserve.vllm.hints import HINT_VALIDATOR
    from augserve.vllm.validation import HintValidator

    assert HintValidator in _load_custom_logitsprocs([HINT_VALIDATOR])
    assert HintValidator in _load_v2_logitsprocs([HINT_VALIDATOR])
    v = HintValidator(None, None, False)
    assert v.is_argmax_invariant() and not v.add_request(0, None)
    x = object()
    assert v.apply(x) is x and v.apply(x, None) is x
    HintValidator.validate_params(SamplingParams(extra_args={"tool_durations": [1.0],
                                                             "return_lengths": [2]}))
    HintValidator.validate_params(SamplingParams())
    with pytest.raises(VLLMValidationError) as e:
        HintValidator.validate_params(SamplingParams(extra_args={"tool_durations": "abc"}))
    assert e.value.parameter == "vllm_xargs.tool_durations"


def test_preempted_request_is_reported_to_the_policy(llm) -> None:
    s = sched_of(llm)
    pol = Recorder()
    s.attach(pol)
    # two requests that together outgrow the cache while decoding: vLLM preempts the later one
    add(llm, "p1", 300, max_tokens=200, x_rank=0)
    add(llm, "p2", 300, max_tokens=200, x_rank=1)
    while llm.has_unfinished_requests():
        llm.step()
    assert any(v["preempted"] for v in pol.views)
    drain(llm)


def test_async_scheduler_class_is_importable() -> None:
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    from augserve.vllm import AugServeAsyncScheduler, AugServeScheduler

    assert issubclass(AugServeAsyncScheduler, AsyncScheduler)
    assert not issubclass(AugServeScheduler, AsyncScheduler)
