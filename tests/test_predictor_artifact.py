"""Artifacts: train, save, load, identical predictions; broken artifacts -> clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from augserve.predictor import Prediction, Predictor
from predictors.artifact import LGBMPredictor, load_predictor, save_artifact
from predictors.features import FeatureSpec
from predictors.models import build_samples, fit_family
from predictors.synthetic import synthetic_rows, view_of

SPEC = FeatureSpec(hash_word=32)
PARAMS = {"lgbm": {"num_boost_round": 20}, "hgb": {"max_iter": 20}, "linear": {}}


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows(240, seed=5)


@pytest.fixture(scope="module")
def samples(rows):
    return build_samples(rows, SPEC)


@pytest.fixture(scope="module")
def lgbm_dir(tmp_path_factory, samples):
    models = fit_family("lgbm", samples, SPEC, PARAMS["lgbm"], seed=0, num_threads=1)
    path = tmp_path_factory.mktemp("art") / "lgbm"
    save_artifact(path, "lgbm", SPEC, models, config={"seed": 0}, metrics={"x": 1.0})
    return path, models


def _views(rows, runtime=False):
    return [view_of(r, r.num_calls if runtime else 0) for r in rows[:40]]


@pytest.mark.parametrize("kind", ["lgbm", "hgb", "linear"])
def test_save_load_identical_predictions(kind, rows, samples, lgbm_dir, tmp_path):
    if kind == "lgbm":
        path, models = lgbm_dir
    else:
        models = fit_family(kind, samples, SPEC, PARAMS[kind], seed=0, num_threads=1)
        path = save_artifact(tmp_path / kind, kind, SPEC, models)
    before = LGBMPredictor(SPEC, models, kind=kind)
    after = load_predictor(str(path), kind=kind, params={"ignored": True})
    assert isinstance(after, Predictor)
    for runtime in (False, True):
        views = _views(rows, runtime)
        fn = "predict_remaining" if runtime else "predict"
        p, q = getattr(before, fn)(views), getattr(after, fn)(views)
        assert isinstance(q, Prediction)
        for f in ("output_tokens", "num_calls", "tool_s", "rank_score"):
            a, b = getattr(p, f), getattr(q, f)
            assert a.shape == (len(views),)
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=f"{kind} {fn} {f}")
    assert (q.output_tokens >= 1).all() and (q.tool_s > 0).all()


def test_training_is_deterministic(samples):
    a = fit_family("lgbm", samples, SPEC, PARAMS["lgbm"], seed=0, num_threads=2)
    b = fit_family("lgbm", samples, SPEC, PARAMS["lgbm"], seed=0, num_threads=2)
    X = samples["remaining"].X
    for t in a:
        np.testing.assert_array_equal(a[t].predict(X), b[t].predict(X))


def test_remaining_shrinks_with_progress(lgbm_dir, rows):
    pred = load_predictor(str(lgbm_dir[0]))
    r = [r for r in rows if r.num_calls >= 3][:20]
    start = pred.predict_remaining([view_of(x, 0) for x in r]).output_tokens
    late = pred.predict_remaining([view_of(x, x.num_calls) for x in r]).output_tokens
    assert late.mean() < start.mean()


def test_broken_artifacts_name_the_path(lgbm_dir, tmp_path):
    src, _ = lgbm_dir
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_predictor(str(missing))
    with pytest.raises(ValueError, match="kind 'lgbm', expected 'hgb'"):
        load_predictor(str(src), kind="hgb")
    with pytest.raises(ValueError, match="evaluation-only"):
        load_predictor(str(src), kind="oracle")

    def broken(name, edit):
        d = tmp_path / name
        shutil.copytree(src, d)
        edit(d)
        return d

    d = broken("no_model", lambda d: (d / "models" / "output.txt").unlink())
    with pytest.raises(FileNotFoundError, match=f"{d}.*models/output.txt"):
        load_predictor(str(d))
    d = broken("no_meta", lambda d: (d / "artifact.json").unlink())
    with pytest.raises(FileNotFoundError, match=f"{d}.*artifact.json"):
        load_predictor(str(d))
    d = broken("no_spec", lambda d: (d / "feature_spec.json").unlink())
    with pytest.raises(FileNotFoundError, match=f"{d}.*feature_spec.json"):
        load_predictor(str(d))

    def bump(d, key, value):
        p = d / "artifact.json"
        meta = json.loads(p.read_text())
        meta[key] = value
        p.write_text(json.dumps(meta))

    d = broken("old", lambda d: bump(d, "version", 0))
    with pytest.raises(ValueError, match=f"{d}.*version 0"):
        load_predictor(str(d))
    d = broken("mean_kind", lambda d: bump(d, "kind", "mean"))
    with pytest.raises(ValueError, match="cannot be served"):
        load_predictor(str(d))
    d = broken("corrupt", lambda d: (d / "models" / "calls.txt").write_text("garbage"))
    with pytest.raises(ValueError, match="calls.txt"):
        load_predictor(str(d))


# -- the serving path (cached arrival rows, cached re-predictions, single-row trees) ---------------
@pytest.fixture(scope="module")
def shipped():
    from pathlib import Path

    return load_predictor(str(Path(__file__).resolve().parents[1] / "data/predictors/lgbm"))


def _real_views(n: int = 150) -> list:
    """Views of real tool-use requests (prompt text, tools, schemas) at every call index."""
    from pathlib import Path

    from predictors.data import load_source

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    views = []
    for src in ("toolbench_cot", "api_bank", "bfcl", "infercept_mix"):
        rows, _ = load_source(src, data)
        for r in rows[: n // 4]:
            views += [view_of(r, k) for k in range(min(r.num_calls, 3) + 1)]
    return views


def _plain(pred, views, remaining):
    from predictors.features import FeatureInput

    return pred.predict_inputs([FeatureInput.from_view(v) for v in views], remaining)


def test_serving_path_is_the_plain_path_bit_for_bit(shipped) -> None:
    views = _real_views()
    fields = ("output_tokens", "num_calls", "tool_s", "rank_score")
    for size in (1, 3, 16, 64, len(views)):  # single rows, small batches, Booster.predict
        shipped.reset()
        for start in range(0, min(len(views), 4 * size), size):
            vs = views[start:start + size]
            for _ in range(2):  # a miss, then a hit
                for fn, rem in (("predict", False), ("predict_remaining", True)):
                    got, ref = getattr(shipped, fn)(vs), _plain(shipped, vs, rem)
                    for f in fields:
                        assert np.array_equal(getattr(got, f), getattr(ref, f)), (size, fn, f)
                assert np.array_equal(shipped.predict_tool_s(vs), _plain(shipped, vs, True).tool_s)


def test_serving_caches_are_bounded_and_reset(shipped) -> None:
    small = LGBMPredictor(shipped.spec, shipped.models, cache_size=5)
    views = _real_views(40)[:30]
    ref = _plain(shipped, views, True).output_tokens
    for i in range(0, 30, 3):
        got = small.predict_remaining(views[i:i + 3]).output_tokens
        assert np.array_equal(got, ref[i:i + 3])
    assert len(small._cache) <= 5 and len(small._remaining) <= 5
    assert np.array_equal(small.predict_remaining(views).output_tokens, ref)  # batch > size
    small.reset()
    assert not small._cache and not small._remaining and not small._tool
    with pytest.raises(ValueError, match="cache_size"):
        LGBMPredictor(shipped.spec, shipped.models, cache_size=0)


def test_single_row_trees_are_booster_predict(shipped) -> None:
    from predictors.features import FeatureInput, build_matrix
    from predictors.lgbm_fast import FAST_MAX_ROWS

    X = build_matrix(shipped.spec, [FeatureInput.from_view(v) for v in _real_views(60)])
    for t, m in shipped.models.items():
        ref = m.booster.predict(X, num_threads=1)
        rows = np.concatenate([m._fast.predict(X[i:i + 7]) for i in range(0, len(X), 7)])
        assert np.array_equal(rows, ref), t
        assert len(X) > FAST_MAX_ROWS and np.array_equal(m._fast.predict(X), ref)
