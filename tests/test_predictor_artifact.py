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
