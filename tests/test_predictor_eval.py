"""Metrics: Kendall tau-b on hand-computed cases, MAE/MAPE, call-count accuracy, splits."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.evaluate import (
    call_accuracy,
    kendall_tau,
    kendall_tau_b,
    mae,
    mape,
    within_split,
)
from predictors.synthetic import synthetic_rows


def test_kendall_tau_hand_computed():
    # x = [1, 2, 3, 4], y = [1, 3, 2, 4]: 6 pairs; only (2,3) is discordant -> C=5, D=1, no ties
    # tau = (5 - 1) / 6 = 2/3
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    assert kendall_tau_b(x, y) == pytest.approx(2 / 3)
    assert kendall_tau(x, y) == pytest.approx(2 / 3)


def test_kendall_tau_b_with_ties():
    # x = [1, 1, 2, 3], y = [1, 2, 2, 3]; n0 = 6 pairs
    # pairs: (0,1) tied in x; (1,2) tied in y; the other 4 are concordant -> C=4, D=0
    # n1 = 1 (tied in x), n2 = 1 (tied in y): tau_b = 4 / sqrt(5 * 5) = 0.8
    x, y = [1, 1, 2, 3], [1, 2, 2, 3]
    assert kendall_tau_b(x, y) == pytest.approx(0.8)
    assert kendall_tau(x, y) == pytest.approx(0.8)


def test_kendall_tau_matches_scipy_and_degenerate_cases():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 300)
    y = x + rng.integers(0, 10, 300)
    assert kendall_tau_b(x, y) == pytest.approx(kendall_tau(x, y), abs=1e-12)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert np.isnan(kendall_tau_b([1], [1]))


def test_mae_mape_call_accuracy():
    assert mae([10, 20, 30], [12, 20, 25]) == pytest.approx((2 + 0 + 5) / 3)
    assert mape([10, 20, 30], [20, 20, 60]) == pytest.approx((0.5 + 0 + 0.5) / 3)
    with pytest.raises(ValueError):
        mape([1], [0])
    # rounded: 0.4->0 ok, 1.6->2 ok, 2.5->2 (banker's rounding) vs 3 wrong, -0.2 -> 0 ok
    assert call_accuracy([0.4, 1.6, 2.5, -0.2], [0, 2, 3, 0]) == pytest.approx(0.75)
    assert np.isnan(mae([], []))


def test_within_split_is_group_aware_and_seeded():
    rows = synthetic_rows(300, seed=1)
    a, b = within_split(rows, 0.2, seed=0), within_split(rows, 0.2, seed=0)
    assert np.array_equal(a, b)
    assert 0.1 < a.mean() < 0.35
    test_groups = {(r.source, r.group) for r, t in zip(rows, a, strict=True) if t}
    train_groups = {(r.source, r.group) for r, t in zip(rows, a, strict=True) if not t}
    assert not test_groups & train_groups
    for s in {r.source for r in rows}:  # every source has test rows
        assert any(t for r, t in zip(rows, a, strict=True) if r.source == s)
