"""experiments/tune.py's rules: which setting replaces a default, and what capacity means."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tune", ROOT / "experiments" / "tune.py")
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)


def test_a_setting_replaces_the_default_only_beyond_the_resolution() -> None:
    grid = {1024: 10.0, 2048: 10.4, 4096: 10.9}
    assert tune.select(grid, 2048, 0.05) == 2048  # +4.8%: within the bisection's error
    assert tune.select(grid, 1024, 0.05) == 4096  # +9%
    assert tune.select({61: 4.1, 2048: 11.5}, 61, 0.05) == 2048
    assert tune.select({2048: 10.0, 4096: 10.0}, 2048, 0.0) == 2048  # a tie keeps the default


def test_capacity_is_a_rate_that_was_run_and_met(monkeypatch) -> None:
    tried: list[float] = []

    def fake(profile, policy, settings, seed, rate, duration_s):
        tried.append(rate)
        return 1.0 if rate <= 7.3 else 0.5

    monkeypatch.setattr(tune, "attainment", fake)
    c = tune.capacity("p", "vllm", {}, 0, 10.0, 4.0, 0.9, 0.05)
    assert c in tried and c <= 7.3 and c > 7.3 / 1.05
    tried.clear()
    monkeypatch.setattr(tune, "attainment", lambda *a: 1.0)  # never fails: stop at 64x start
    c = tune.capacity("p", "vllm", {}, 0, 10.0, 1.0, 0.9, 0.05)
    assert c <= 64.0 and math.isclose(c, 1.5 ** math.floor(math.log(64, 1.5)))
    monkeypatch.setattr(tune, "attainment", lambda *a: 0.0)
    assert tune.capacity("p", "vllm", {}, 0, 10.0, 1.0, 0.9, 0.05) == 0.0


def test_augserve_budget_grid_runs_its_default_constants() -> None:
    s = tune.budget_overrides("augserve", 512)
    assert {k: s[k] for k in tune.AUGSERVE_DEFAULTS} == tune.AUGSERVE_DEFAULTS
    assert (s["b_base"], s["b_max"]) == (512, 4096)


def test_a_kept_entry_is_reselected_by_the_same_rule() -> None:
    entry = {"default": {"max_num_batched_tokens": 2048},
             "tuned": {"max_num_batched_tokens": 4096},
             "grid": {2048: 10.9, 4096: 11.01}, "capacity_tuned_ci95": 0.19}
    out = tune.finish(entry, 0.05)
    assert out["tuned"] == {"max_num_batched_tokens": 2048}
    assert out["capacity_tuned"] == out["capacity_default"] == 10.9
    assert "capacity_tuned_ci95" not in out  # measured for 4096, not for 2048


def test_the_table_reads_the_committed_files() -> None:
    md = tune.table(["llama3_8b_a100", "gptj_6b_a100"], tune.TUNED_DIR)
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()[2:]}
    assert set(tune.POLICIES) <= set(rows)
    with pytest.raises(FileNotFoundError):
        tune.table(["no_such_profile"], tune.TUNED_DIR)


def test_write_merges_reselects_and_warns_about_rows_tuned_with_another_tier(tmp_path,
                                                                             capsys) -> None:
    import yaml

    fresh = {"default": tune.budget_overrides("augserve", 2048), "grid": {2048: 12.0},
             "grid_ci95": {2048: 0.3}, "constants": {},
             "tuned": {**tune.budget_overrides("augserve", 2048), "starve_after_s": 5.0},
             "capacity_tuned": 13.0, "protocol": {"resolution": 0.05}}
    path = tune.write("llama3_8b_a100", {"policies": {"augserve": fresh}}, tmp_path, 0.05)
    doc = yaml.safe_load(path.read_text())
    assert doc["policies"]["augserve"]["tuned"]["starve_after_s"] == 5.0
    assert doc["policies"]["augserve"]["capacity_default"] == 12.0
    assert set(tune.POLICIES) <= set(doc["policies"])  # the committed entries are kept
    for e in doc["policies"].values():  # int budgets survive the yaml round trip
        assert all(isinstance(b, int) for b in e["grid"])
        assert e["tuned"]["max_num_batched_tokens"] in e["grid"]
    err = capsys.readouterr().err
    assert "vllm_slo" in err and "edf" in err and "retune" in err


def test_docs_carry_the_committed_tuned_table() -> None:
    md = tune.table(["llama3_8b_a100", "gptj_6b_a100"], tune.TUNED_DIR)
    assert md in (ROOT / "docs" / "baselines.md").read_text(), \
        "docs/baselines.md: paste `python experiments/tune.py --table`"
