"""The request-hint schema (augserve/vllm/hints.py) and the view built from hints; no vLLM."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augserve.contract import State
from augserve.sched.augserve import AugServePolicy
from augserve.sched.infercept import InferCeptPolicy
from augserve.sched.kind_means import KindMeans
from augserve.vllm.deploy import HintPredictor
from augserve.vllm.hints import (
    FIELDS,
    MAX_CALLS,
    MAX_TOOL_S,
    NO_HINTS,
    SCHEMA,
    HintError,
    check_hints,
    parse_hints,
    schema_table,
)
from augserve.vllm.runtime import ServedRuntime

ROOT = Path(__file__).resolve().parents[1]
NOW = 1.8e9  # a Unix time


def served(extra, prompt_tokens: int = 40, arrival: float = NOW) -> ServedRuntime:
    vreq = SimpleNamespace(
        request_id="r-1", arrival_time=arrival, num_prompt_tokens=prompt_tokens,
        num_tokens=prompt_tokens, num_output_tokens=0, num_computed_tokens=0,
        status=SimpleNamespace(name="WAITING"), sampling_params=SimpleNamespace(extra_args=extra))
    return ServedRuntime(vreq, block_size=32, t0=NOW - 10.0)


# -- the cases of the bug report, one by one -------------------------------------------------
@pytest.mark.parametrize("extra, key", [
    ({"tool_durations": "abc"}, "tool_durations"),  # took the live server down
    ({"tool_durations": ["abc"], "return_lengths": [1]}, "tool_durations"),
    ({"tool_durations": [-1.0], "return_lengths": [3]}, "tool_durations"),
    ({"tool_durations": [1.0], "return_lengths": [-3]}, "return_lengths"),
    ({"predicted_output_tokens": "5"}, "predicted_output_tokens"),
    ({"arrival_s": "yesterday"}, "arrival_s"),
    ({"generated_tokens": -100000000}, "generated_tokens"),
    ({"tool_durations": [float("nan")], "return_lengths": [1]}, "tool_durations"),
    ({"predicted_tool_s": float("inf")}, "predicted_tool_s"),
    ({"predicted_output_tokens": 1e300}, "predicted_output_tokens"),
    ({"tool_durations": [0.5, 1.0], "return_lengths": [3]}, "return_lengths"),
    ({"generated_tokens": 2.5}, "generated_tokens"),
    ({"aug_type": ""}, "aug_type"),
    ({"tool": "line\nbreak"}, "tool"),
    ({"tools": "search"}, "tools"),
    ({"tools": ["a", 3]}, "tools"),
    ({"prompt_text": 17}, "prompt_text"),
    ({"predicted_num_calls": True}, "predicted_num_calls"),
    ({"arrival_s": NOW + 3600}, "arrival_s"),  # an hour in the future
    ({"arrival_s": NOW - 30 * 86400}, "arrival_s"),  # a month ago
    ({"arrival_s": 10**400}, "arrival_s"),  # JSON allows it; float() would overflow
    ({"tool_duration": [1.0]}, "unknown"),  # a misspelt hint must not vanish silently
])
def test_each_violation_names_its_field(extra, key) -> None:
    with pytest.raises(HintError) as e:
        check_hints(extra, now_s=NOW)
    assert e.value.key == key
    where = e.value.where
    assert str(e.value).startswith(f"vllm_xargs.{where}: ") and e.value.reason
    if key != "unknown":
        assert where == key or where.startswith(f"{key}[")
    else:
        assert "did you mean 'tool_durations'" in str(e.value)
    if "server's clock" not in str(e.value):  # the engine checks no clock window
        hints, reason = parse_hints(extra)
        assert hints is NO_HINTS and reason == str(e.value)


def test_good_hints_are_typed_and_foreign_keys_pass_through() -> None:
    h = check_hints({
        "aug_type": "qa", "tool": "search", "tool_durations": [0.25, 2], "return_lengths": [4, 7.0],
        "generated_tokens": 12, "arrival_s": NOW - 5, "predicted_output_tokens": 120,
        "tools": ["search", "calc"], "tools_schema_tokens": 300, "source": "toolbench_cot",
        "session_id": "s-9", "kv_transfer_params": {"x": 1}, "tag": "mine", "rank": 2,
    }, now_s=NOW)
    assert (h.aug_type, h.tool, h.generated_tokens) == ("qa", "search", 12)
    assert h.tool_durations == (0.25, 2.0) and h.return_lengths == (4, 7)
    assert all(type(x) is int for x in h.return_lengths)
    assert h.arrival_s == NOW - 5
    m = h.metadata
    assert m["tools"] == ("search", "calc") and m["tools_schema_tokens"] == 300
    assert m["predicted_output_tokens"] == 120.0 and m["source"] == "toolbench_cot"
    assert m["session_id"] == "s-9" and m["tag"] == "mine" and m["rank"] == 2
    assert check_hints(None) is NO_HINTS and check_hints({}) is NO_HINTS


# -- properties -------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=80))
values = st.one_of(scalars, st.lists(scalars, max_size=6))
keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=20))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_any_input_is_accepted_within_bounds_or_rejected_with_a_field(extra) -> None:
    try:
        h = check_hints(extra, now_s=NOW)
    except HintError as e:
        assert e.key in FIELDS or e.key == "unknown"
        if "server's clock" not in str(e):
            hints, reason = parse_hints(extra)
            assert hints is NO_HINTS and reason
        return
    # accepted: every value a policy or predictor reads is typed and bounded
    assert isinstance(h.aug_type, str) and 1 <= len(h.aug_type) <= 64
    assert len(h.tool_durations) == len(h.return_lengths) <= MAX_CALLS
    assert all(isinstance(d, float) and 0 <= d <= MAX_TOOL_S for d in h.tool_durations)
    assert all(type(r) is int and r >= 0 for r in h.return_lengths)
    assert type(h.generated_tokens) is int and h.generated_tokens >= 0
    for k in ("predicted_output_tokens", "predicted_num_calls", "predicted_tool_s",
              "tools_schema_tokens"):
        if k in h.metadata:
            x = h.metadata[k]
            assert not isinstance(x, bool) and math.isfinite(x) and 0 <= x <= FIELDS[k].hi
    if h.arrival_s is not None:
        assert NOW - 7 * 86400 <= h.arrival_s <= NOW + 60
    assert parse_hints(extra) == (h, None)


good_values = {
    "aug_type": st.sampled_from(["math", "qa", "ve", "chatbot", "image", "tts", "other"]),
    "prompt_text": st.text(max_size=200),
    "source": st.sampled_from(["toolbench_cot", "api_bank", "bfcl"]),
    "tools": st.lists(st.sampled_from(["search", "calc", "weather"]), max_size=4),
    "tools_schema_tokens": st.integers(0, 5000),
    "generated_tokens": st.integers(0, 10_000),
    "tool": st.sampled_from(["search", "calc"]),
    "predicted_output_tokens": st.floats(0, 1e5),
    "predicted_num_calls": st.integers(0, 20),
    "predicted_tool_s": st.floats(0, MAX_TOOL_S),
}


@st.composite
def good_hints(draw) -> dict:
    d = {k: draw(s) for k, s in good_values.items() if draw(st.booleans())}
    n = draw(st.integers(0, 5))
    if n:
        d["tool_durations"] = draw(st.lists(st.floats(0, 600), min_size=n, max_size=n))
        d["return_lengths"] = draw(st.lists(st.integers(0, 4000), min_size=n, max_size=n))
    return d


@settings(max_examples=200, deadline=None)
@given(good_hints(), st.sampled_from([f for f in SCHEMA if f.key not in ("arrival_s",)]),
       st.sampled_from(["wrong type", "out of range", "nan"]))
def test_one_bad_field_among_good_ones_is_the_one_named(good, f, how) -> None:
    assert check_hints(good, now_s=NOW).metadata.keys() >= good.keys()
    text = f.kind in ("name", "text", "names")
    bad_scalar = {"wrong type": 12 if text else "abc",
                  "out of range": "x" * 300_000 if text else -1, "nan": float("nan")}[how]
    bad = dict(good)
    if f.kind in ("names", "ints", "numbers"):
        bad[f.key] = [bad_scalar]
        if f.key in ("tool_durations", "return_lengths"):
            other = "return_lengths" if f.key == "tool_durations" else "tool_durations"
            bad[other] = [1]
    else:
        bad[f.key] = bad_scalar
    with pytest.raises(HintError) as e:
        check_hints(bad, now_s=NOW)
    assert e.value.key == f.key


def test_the_engine_bounds_token_counts_by_the_context() -> None:
    ok = {"tool_durations": [1.0], "return_lengths": [2000], "generated_tokens": 300}
    assert parse_hints(ok, max_tokens=4096) == (check_hints(ok), None)
    for key, extra in (("return_lengths", {**ok, "return_lengths": [10_000_000]}),
                       ("generated_tokens", {**ok, "generated_tokens": 5000}),
                       ("tools_schema_tokens", {"tools_schema_tokens": 9000})):
        hints, reason = parse_hints(extra, max_tokens=4096)
        assert hints is NO_HINTS and reason.startswith(f"vllm_xargs.{key}: ") and "4096" in reason
    rt = served({"tool": "math", "tool_durations": [1.0], "return_lengths": [10_000_000]})
    assert rt.hint_error is None  # no context given: the schema's own bound
    vreq = SimpleNamespace(request_id="r", arrival_time=NOW, num_prompt_tokens=40, num_tokens=40,
                           num_output_tokens=0, num_computed_tokens=0,
                           status=SimpleNamespace(name="WAITING"),
                           sampling_params=SimpleNamespace(extra_args={
                               "return_lengths": [10_000_000], "tool_durations": [1.0]}))
    assert ServedRuntime(vreq, 32, NOW, max_model_len=4096).view.observed_return_tokens == ()


def test_the_engine_clamps_the_first_turn_s_arrival() -> None:
    long_ago = served({"arrival_s": NOW - 30 * 86400}).view
    future = served({"arrival_s": NOW + 3600}).view
    assert long_ago.arrival_s == pytest.approx(10.0 - 7 * 86400) and future.arrival_s == 10.0


# -- the view built from hints ------------------------------------------------------------------
def test_served_view_with_unusable_hints_is_hint_less() -> None:
    rt = served({"tool_durations": "abc", "aug_type": "qa", "predicted_output_tokens": 9})
    v = rt.view
    assert rt.hint_error and "tool_durations" in rt.hint_error
    assert (v.aug_type, v.calls_done, v.observed_tool_s, v.current_tool) == ("other", 0, (), None)
    assert v.generated_tokens == 0 and dict(v.metadata) == {} and v.prompt_text is None
    assert v.arrival_s == v.submit_s == 10.0 and v.state is State.WAITING
    # the hint-less view is one every predictor and policy can take
    p = HintPredictor().predict([v])
    assert p.output_tokens[0] == 256.0


def test_served_view_with_good_hints() -> None:
    rt = served({"aug_type": "math", "tool": "calc", "tool_durations": [0.2],
                 "return_lengths": [3], "generated_tokens": 12, "arrival_s": NOW - 4})
    v = rt.view
    assert rt.hint_error is None
    assert (v.aug_type, v.current_tool, v.calls_done, v.observed_tool_s) == ("math", "calc", 1,
                                                                             (0.2,))
    assert v.generated_tokens == 12 and v.arrival_s == 6.0 and v.submit_s == 10.0


# -- what a client can do to a policy's shared state -----------------------------------------
def test_kind_tables_are_bounded_and_keep_what_recurs() -> None:
    km = KindMeans(default=1.0, max_kinds=3)
    for _ in range(2):
        km.add("search", 4.0)
    for i in range(10):  # made-up names, one each
        km.add(f"junk-{i}", 5.0)
    assert len(km) == 3 and km.mean("search") == 4.0  # seen twice: kept
    assert km.mean("junk-9") == km.mean("junk-8") == 5.0 and km.mean("junk-0") == 1.0
    km.add("search", 7.0)
    assert km.mean("search") == 5.0 and km.mean(None) == 1.0
    with pytest.raises(ValueError):
        KindMeans(1.0, max_kinds=0)


def test_policies_learn_only_bounded_tool_returns() -> None:
    ic = InferCeptPolicy()
    au = AugServePolicy(predictor=HintPredictor())
    for i in range(3000):  # many clients, each with a tool name of its own
        rt = served({"tool": f"t{i}", "tool_durations": [MAX_TOOL_S], "return_lengths": [5]})
        ic.on_tool_return(rt.view, rt.tool_durations[-1])
        au.on_tool_return(rt.view, rt.tool_durations[-1])
    assert len(ic.kv.tool_s) == 1024 and ic.tool_estimate("t2999") == MAX_TOOL_S
    assert ic.tool_estimate("t0") == ic.default_tool_s  # pushed out by later names
    assert len(au._returns) == 1024 and au.mean_return("t2999") == 5.0


def test_docs_list_the_schema() -> None:
    doc = (ROOT / "docs" / "vllm.md").read_text()
    assert schema_table() in doc, "docs/vllm.md: paste augserve.vllm.hints.schema_table()"
    for f in SCHEMA:
        assert re.search(rf"`{f.key}`", doc)
