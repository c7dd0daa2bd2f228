"""Out of sample: the evaluation workloads draw only rows the shipped predictor was not fit on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from augserve.workload.holdout import load_holdout
from predictors.data import load_source
from predictors.evaluate import within_split

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ARTIFACT = ROOT / "data" / "predictors" / "lgbm"


def _need(*names: str) -> None:
    for n in names:
        if not (DATA / n).is_dir():
            pytest.skip(f"real data absent: {DATA / n}")


def _workload(name: str, *over: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", [f"workload={name}", "predictor=lgbm", f"data_dir={DATA}",
                                "workload.duration_s=60", *over])
    return cfg.workload, instantiate(cfg.workload)


@pytest.fixture(scope="module")
def split() -> tuple[dict, dict[str, set[str]], dict[str, set[str]]]:
    """The shipped artifact's split, and its training rows recomputed from the data."""
    meta = json.loads((ARTIFACT / "split.json").read_text())
    with (ARTIFACT / "config.yaml").open() as f:
        import yaml

        sources = yaml.safe_load(f)["sources"]
    _need(*sources)
    rows = [r for s in sources for r in load_source(s, DATA)[0]]
    test = within_split(rows, meta["test_size"], meta["seed"])
    held: dict[str, set[str]] = {s: set() for s in sources}
    train: dict[str, set[str]] = {s: set() for s in sources}
    for r, t in zip(rows, test, strict=True):
        (held if t else train)[r.source].add(r.rid)
    return meta, held, train


def test_the_recorded_split_is_the_training_split(split) -> None:
    meta, held, train = split
    assert {s: set(v) for s, v in load_holdout(ARTIFACT).items()} == held
    assert meta["train_rows"] == sum(len(v) for v in train.values())
    for s in held:
        assert held[s] and train[s] and not held[s] & train[s], s


@pytest.mark.parametrize("name", ["toolmix", "api_bank", "tooltalk"])
def test_dataset_workloads_draw_only_held_out_rows(name: str, split) -> None:
    _, held, train = split
    cfg, wl = _workload(name)
    assert Path(cfg.holdout) == Path("data/predictors/lgbm")
    pool = wl.source.scripts
    assert pool
    for s in pool:
        src, rid = s.metadata["source"], s.metadata["script_rid"]
        assert rid in held[src] and rid not in train[src], (src, rid)
    drawn = {(r.metadata["source"], r.metadata["script_rid"]) for r in wl.requests(0)}
    assert drawn and all(rid not in train[src] for src, rid in drawn)
    # holdout=null: every row, the training rows too
    _, every = _workload(name, "workload.holdout=null")
    assert len(every.source.scripts) > len(pool)


def test_infercept_workload_draws_only_held_out_scripts(split) -> None:
    _, held, train = split
    _, wl = _workload("infercept_json")
    keys = {s.rid for s in wl.source.pool}
    assert keys and keys <= held["infercept_mix"] and not keys & train["infercept_mix"]


def test_an_artifact_without_a_split_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="split.json not found"):
        load_holdout(tmp_path)
    (tmp_path / "split.json").write_text('{"held_out": [1]}')
    with pytest.raises(ValueError, match="field 'held_out'"):
        load_holdout(tmp_path)
