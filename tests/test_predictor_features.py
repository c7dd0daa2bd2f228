"""Feature builder: deterministic, and training (row) and serving (view) paths agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictors.features import (
    FeatureInput,
    FeatureSpec,
    arrival_inputs,
    arrival_key,
    build_matrix,
    rows_matrix,
    runtime_inputs,
    set_runtime_columns,
)
from predictors.synthetic import synthetic_rows, view_of
from predictors.text_hash import TextHasher


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows(60, seed=3)


def test_deterministic_and_shape(rows):
    spec = FeatureSpec(hash_word=64, hash_char=32)
    a = rows_matrix(spec, rows)
    b = rows_matrix(FeatureSpec.from_json(spec.to_json()), rows)
    assert a.dtype == np.float32 and a.shape == (len(rows), spec.n_features)
    assert np.array_equal(a, b, equal_nan=True)
    # order independence: a row's vector does not depend on the batch it is in
    c = rows_matrix(spec, rows[::-1])[::-1]
    assert np.array_equal(a, c, equal_nan=True)
    assert len(spec.feature_names) == spec.n_features
    json.loads(spec.to_json())


def test_row_and_view_agree_at_arrival_and_runtime(rows):
    spec = FeatureSpec()
    for r in rows[:30]:
        k_values = [0]
        if r.meta.get("tool_s") is not None:  # tool times known: runtime fields comparable
            k_values += list(range(1, r.num_calls + 1))
        for k in k_values:
            fr, fv = FeatureInput.from_row(r, at_call=k), FeatureInput.from_view(view_of(r, k))
            assert fr.calls_done == fv.calls_done == k
            assert fr.generated_tokens == fv.generated_tokens
            assert fr.last_return_tokens == fv.last_return_tokens
            assert fr.elapsed_tool_s == pytest.approx(fv.elapsed_tool_s)
            xr, xv = build_matrix(spec, [fr]), build_matrix(spec, [fv])
            np.testing.assert_allclose(xr, xv, rtol=1e-6)


def test_unknown_vocab_and_tool_times(rows):
    spec = FeatureSpec(hash_word=8)
    f = FeatureInput("hello world", 5, source="new_dataset", aug_type="weird")
    x = build_matrix(spec, [f])[0]
    names = spec.feature_names
    assert x[names.index("src=other")] == 1.0 and x[names.index("aug=<unk>")] == 1.0
    r = next(r for r in rows if r.num_calls > 0 and "tool_s" not in r.meta)
    x = build_matrix(spec, [FeatureInput.from_row(r, at_call=1)])[0]
    assert np.isnan(x[names.index("log_elapsed_tool_s")])  # unknown, not invented
    with pytest.raises(ValueError, match="at_call"):
        FeatureInput.from_row(r, at_call=r.num_calls + 1)


# -- the text hasher is HashingVectorizer, without its overhead ----------------------------------
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def real_prompts() -> list[str]:
    """Prompt texts of every real tool-use dataset (../shared/data), plus edge cases."""
    from predictors.data import load_source

    texts = []
    for src in ("toolbench_cot", "api_bank", "toolalpaca", "tooltalk", "bfcl", "infercept_mix"):
        rows, _ = load_source(src, DATA)
        texts += [r.prompt_text or "" for r in rows[::7]]
    return texts + ["", "   ", "a", "Ünïcødé – ümlaut 東京 👍 café", "x" * 5000, "the the the"]


@pytest.mark.parametrize("analyzer, ngrams, n", [("word", (1, 1), 256), ("word", (1, 2), 128),
                                                 ("char_wb", (3, 4), 64)])
def test_text_hasher_is_hashing_vectorizer(real_prompts, analyzer, ngrams, n) -> None:
    h = TextHasher(n, analyzer, ngrams)
    ref = h.vectorizer.transform(real_prompts).toarray()
    got = h.transform(real_prompts)
    assert got.dtype == np.float32 and got.shape == ref.shape == (len(real_prompts), n)
    assert np.array_equal(got, ref)  # bit for bit
    one = np.vstack([h.transform([t]) for t in real_prompts[:50]])
    assert np.array_equal(one, ref[:50])  # a row does not depend on its batch
    assert (got.sum(axis=1) > 0).sum() > len(real_prompts) // 2


def test_runtime_columns_are_build_matrix_s(rows) -> None:
    spec = FeatureSpec(hash_word=16)
    for k in (0, 1, 2):
        fs = [FeatureInput.from_row(r, at_call=min(k, r.num_calls)) for r in rows]
        full = build_matrix(spec, fs)
        X = build_matrix(spec, [f.at_arrival() for f in fs])
        set_runtime_columns(spec, X, [(f.generated_tokens, f.calls_done, f.last_return_tokens,
                                       f.elapsed_tool_s) for f in fs])
        assert np.array_equal(X, full, equal_nan=True)
    v = view_of(rows[0], rows[0].num_calls)
    assert FeatureInput.from_view(v) == FeatureInput(*arrival_inputs(v), *runtime_inputs(v))


def test_arrival_key_holds_what_the_columns_read() -> None:
    """Two prompts equal in their first and last 500 chars and in length give one row: the
    key keeps only that much of the text (a cache of them holds no whole prompts)."""
    spec = FeatureSpec(hash_word=64, text_chars=1000)
    a, b = "x " * 300 + "alpha " * 500 + "y " * 300, "x " * 300 + "omega " * 500 + "y " * 300
    ia, ib = (a, 50, "bfcl", "qa", ("t",), 3), (b, 50, "bfcl", "qa", ("t",), 3)
    assert arrival_key(spec, ia) == arrival_key(spec, ib) and len(arrival_key(spec, ia)[0]) <= 1001
    assert np.array_equal(build_matrix(spec, [FeatureInput(*ia)]),
                          build_matrix(spec, [FeatureInput(*ib)]))
    ic = (a + "z", *ia[1:])  # one char longer: another prompt-length feature
    assert arrival_key(spec, ic) != arrival_key(spec, ia)


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("toolbench_cot", "api_bank", "toolalpaca", "tooltalk", "bfcl", "infercept_mix")


def test_training_features_are_what_the_engine_shows(tmp_path) -> None:
    """Train/serve parity through the real converters: a dataset row's features (training)
    equal those of the request ``rows_to_requests`` makes of it, read off the simulator's
    views at arrival and after each returned call (serving)."""
    from augserve.contract import KVMode
    from augserve.engine.factory import make_sim_engine
    from augserve.sched.vllm import VLLMPolicy
    from predictors.data import load_source
    from predictors.workload import ToolTimeModel, rows_to_requests

    rows = []
    for name in SOURCES:
        if not (DATA / name).is_dir():
            pytest.skip(f"real data absent: {DATA / name}")
        got, _ = load_source(name, DATA)
        rows += [r for r in got if r.prompt_tokens + r.tools_schema_tokens < 6000][:40]
    reqs = rows_to_requests(rows, ToolTimeModel(), np.random.default_rng(0))
    seen: dict[tuple[str, int], FeatureInput] = {}

    class Probe(VLLMPolicy):  # vllm mode: every resume re-enters the queue
        def on_enqueue(self, view, state):
            seen.setdefault((view.rid, view.calls_done), FeatureInput.from_view(view))
            return super().on_enqueue(view, state)

        def on_intercept(self, view, state):
            return KVMode.VLLM

    for i, r in enumerate(reqs):  # one at a time: nothing preempts
        object.__setattr__(r, "arrival_s", float(100 * i))
    make_sim_engine(constant_step_s=0.001).run(reqs, Probe(2048))
    spec = FeatureSpec()
    compared = 0
    for row in rows:
        known = all(s is not None for s in row.segment_tokens) and all(
            x is not None for x in row.return_tokens)
        for k in range(row.num_calls + 1 if known else 1):
            fr, fv = FeatureInput.from_row(row, at_call=k), seen[(row.rid, k)]
            assert fr.prompt_tokens == fv.prompt_tokens, (row.source, row.rid)
            assert fr.at_arrival() == fv.at_arrival() if k == 0 else True
            assert (fr.generated_tokens, fr.last_return_tokens) == (
                fv.generated_tokens, fv.last_return_tokens), (row.source, row.rid, k)
            if k == 0:
                np.testing.assert_array_equal(build_matrix(spec, [fr]), build_matrix(spec, [fv]))
            compared += 1
    assert compared > len(rows)
