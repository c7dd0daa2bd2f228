"""predictors.pipeline.train_predictors as a library call (no Hydra run, no datasets): the
files train.py writes, its return value, and the logger calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import predictors.pipeline as pipeline
from predictors.artifact import load_predictor, save_artifact
from predictors.features import FeatureSpec
from predictors.models import build_samples, fit_family, subset
from predictors.schema import ConversionReport
from predictors.synthetic import synthetic_rows, view_of

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("toolbench_cot", "infercept_mix")


class _Recorder:
    def __init__(self) -> None:
        self.summaries: list[str] = []
        self.images: list[str] = []
        self.closed = False

    def log_summary(self, policy: str, summary: Any) -> None:
        self.summaries.append(policy)

    def log_images(self, images: Any) -> None:
        self.images += list(images)

    def close(self) -> None:
        self.closed = True


def _fake_load_source(name: str, data_dir: Path) -> tuple[list, ConversionReport]:
    rows = [r for r in synthetic_rows(240, seed=1, sources=SOURCES) if r.source == name]
    return rows, ConversionReport(source=name, files=1, raw_records=len(rows), rows=len(rows))


def _cfg(tmp_path: Path, *overrides: str):
    """conf/train.yaml on the two fake sources; 5 trees per target unless another predictor."""
    if not any(o.startswith("predictor=") for o in overrides):
        overrides = ("predictor.params.num_boost_round=5", *overrides)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", [f"sources=[{','.join(SOURCES)}]",
                                 "eval.methods=[lgbm,mean,oracle]", f"data_dir={tmp_path}",
                                 f"artifact_dir={tmp_path / 'artifact'}", *overrides])


def test_train_predictors_writes_the_reports_and_the_artifact(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "load_source", _fake_load_source)
    out = tmp_path / "out"
    out.mkdir()
    logger = _Recorder()
    res = pipeline.train_predictors(_cfg(tmp_path), out, logger=logger, progress=False)
    printed = capsys.readouterr().out
    assert "toolbench_cot:" in printed and "Kendall tau" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(pipeline.REPORT_FILES)
    text = (out / "metrics.json").read_text()
    assert text == json.dumps(res["metrics"], indent=1, default=float) + "\n"
    m = json.loads(text)
    assert set(m["results"]) == {"within", "across"} and m["train_wall_s"] == res["wall_s"] > 0
    assert res["objective"] == m["results"]["within"]["lgbm"]["all"]["out_tau"]
    assert (out / "metrics.md").read_text().startswith("# Stage I predictors (lgbm), 240 rows")
    assert res["artifact"] == tmp_path / "artifact" and res["importance_png"] == out / (
        "feature_importance.png")
    pred = load_predictor(str(res["artifact"]), kind="lgbm")
    assert pred.predict([view_of(r) for r in synthetic_rows(4)]).output_tokens.shape == (4,)
    assert "within/lgbm/all" in logger.summaries and "importance/output" in logger.summaries
    assert logger.images == ["feature_importance"] and not logger.closed  # the caller closes


def test_the_artifact_is_fit_on_the_training_rows_and_records_the_held_out_ones(
        tmp_path, monkeypatch) -> None:
    from augserve.workload.holdout import load_holdout
    from predictors.evaluate import within_split

    monkeypatch.setattr(pipeline, "load_source", _fake_load_source)
    out = tmp_path / "out"
    out.mkdir()
    res = pipeline.train_predictors(_cfg(tmp_path), out, progress=False)
    split = json.loads((res["artifact"] / "split.json").read_text())
    rows = [r for s in SOURCES for r in _fake_load_source(s, tmp_path)[0]]
    test = within_split(rows, split["test_size"], split["seed"])
    held = load_holdout(res["artifact"])
    assert set(held) == set(SOURCES)
    for s in SOURCES:
        assert held[s] == {r.rid for r, t in zip(rows, test, strict=True) if t and r.source == s}
        assert 0 < len(held[s]) < sum(r.source == s for r in rows)
    assert split["train_rows"] == res["metrics"]["train_rows"] == int((~test).sum())
    # the served models are the within evaluation's: its held-out scores are theirs
    x = [view_of(r) for r in rows[:8]]
    served = load_predictor(str(res["artifact"]), kind="lgbm").predict(x).output_tokens
    cfg = _cfg(tmp_path)
    spec = FeatureSpec(**OmegaConf.to_container(cfg.features, resolve=True))
    params = OmegaConf.to_container(cfg.predictor.params, resolve=True)
    train = {t: subset(d, ~test) for t, d in build_samples(rows, spec).items()}
    refit = save_artifact(tmp_path / "refit", "lgbm", spec,
                          fit_family("lgbm", train, spec, params, split["seed"], 2))
    assert served.tolist() == load_predictor(str(refit)).predict(x).output_tokens.tolist()


def test_train_predictors_evaluation_only_kind(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "load_source", _fake_load_source)
    res = pipeline.train_predictors(_cfg(tmp_path, "predictor=oracle", "eval.across=false"),
                                    tmp_path, progress=False)
    assert "evaluation-only: no artifact written" in capsys.readouterr().out
    assert res["artifact"] is None and not (tmp_path / "artifact").exists()
    assert res["objective"] == pytest.approx(1.0)  # the oracle's own tau


def test_train_predictors_without_rows_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "load_source",
                        lambda name, d: ([], ConversionReport(source=name)))
    with pytest.raises(ValueError, match="no rows loaded"):
        pipeline.train_predictors(_cfg(tmp_path), tmp_path, progress=False)
