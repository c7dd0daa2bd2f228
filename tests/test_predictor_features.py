"""Feature builder: deterministic, and training (row) and serving (view) paths agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from predictors.features import FeatureInput, FeatureSpec, build_matrix, rows_matrix
from predictors.synthetic import synthetic_rows, view_of


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
