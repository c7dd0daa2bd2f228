"""The permutation-equivariant scorer and the top-m Plackett–Luce distribution."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rl.distributions import PlackettLuce, ranking_to_scores
from rl.net import NetConfig, ScorerNet, obs_to_tensors


def _net(attention: bool = True, prior: float = 0.0) -> ScorerNet:
    torch.manual_seed(0)
    net = ScorerNet(NetConfig(f=5, g=3, n_bins=4, hidden=16, attention=attention, heads=2,
                              prior_index=4 if prior else None, prior_scale=prior))
    for p in net.parameters():  # break the near-zero init of the heads
        torch.nn.init.normal_(p, std=0.3)
    return net.eval()


def _batch(b: int = 3, k: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    items = torch.randn(b, k, 5, generator=g)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, [1, 4]] = False
    return items, mask, torch.randn(b, 3, generator=g)


@pytest.mark.parametrize("attention", [True, False])
def test_permutation_equivariance(attention):
    net = _net(attention)
    items, mask, engine = _batch()
    perm = torch.tensor([3, 0, 6, 2, 5, 1, 4])
    with torch.no_grad():
        s, b, v = net(items, mask, engine)
        sp, bp, vp = net(items[:, perm], mask[:, perm], engine)
    assert torch.equal(torch.isinf(sp), torch.isinf(s[:, perm]))
    fin = torch.isfinite(sp)
    torch.testing.assert_close(sp[fin], s[:, perm][fin], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bp, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vp, v, atol=1e-5, rtol=1e-5)


def test_masked_slots_never_sampled_and_improbable():
    net = _net()
    items, mask, engine = _batch()
    with torch.no_grad():
        s, _, _ = net(items, mask, engine)
    assert torch.isinf(s[~mask]).all() and torch.isfinite(s[mask]).all()
    pl = PlackettLuce(s, mask, top_m=3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        r = pl.sample(gen)
        n = mask.sum(1)
        for row in range(r.shape[0]):
            assert mask[row, r[row, : n[row]]].all()  # valid items first
            assert not mask[row, r[row, n[row]:]].any()  # masked ones last
    # top-1: the probabilities of the valid first picks sum to 1, so masked ones have 0
    for row in range(s.shape[0]):
        total = 0.0
        for i in torch.nonzero(mask[row]).flatten().tolist():
            rank = torch.cat([torch.tensor([i]), torch.tensor(
                [j for j in range(7) if j != i and mask[row, j]] +
                [j for j in range(7) if not mask[row, j]])]).unsqueeze(0)
            total += math.exp(PlackettLuce(s[row:row + 1], mask[row:row + 1], 1)
                              .log_prob(rank).item())
        assert total == pytest.approx(1.0, abs=1e-5)


def test_pl_log_prob_by_hand():
    # utilities s = (ln 1, ln 2, ln 3): weights 1, 2, 3 (total 6).
    # ranking (2, 0, 1): p = 3/6 · 1/(1+2) · 2/2 = 1/6           -> log p = -ln 6
    # ranking (0, 1, 2): p = 1/6 · 2/(2+3) · 3/3 = 1/15          -> log p = -ln 15
    # top-1 of (2, 0, 1): 3/6 = 1/2; top-2 of (0, 1, 2): 1/6 · 2/5 = 1/15
    s = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    mask = torch.ones(1, 3, dtype=torch.bool)
    r1, r2 = torch.tensor([[2, 0, 1]]), torch.tensor([[0, 1, 2]])
    full = PlackettLuce(s, mask)
    assert full.log_prob(r1).item() == pytest.approx(-math.log(6), abs=1e-6)
    assert full.log_prob(r2).item() == pytest.approx(-math.log(15), abs=1e-6)
    assert PlackettLuce(s, mask, 1).log_prob(r1).item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert PlackettLuce(s, mask, 2).log_prob(r2).item() == pytest.approx(-math.log(15),
                                                                        abs=1e-6)
    # with the last item masked: (1, 0) has p = 2/3 · 1 -> log(2/3), whatever s_2 is
    m2 = torch.tensor([[True, True, False]])
    assert PlackettLuce(s, m2).log_prob(torch.tensor([[1, 0, 2]])).item() == pytest.approx(
        math.log(2 / 3), abs=1e-6)


@pytest.mark.parametrize("m", [1, 2, None])
def test_top_m_probabilities_sum_to_one_and_entropy(m):
    s = torch.tensor([[0.3, -1.0, 0.0, 1.2, 0.5]])
    mask = torch.tensor([[True, True, False, True, True]])
    valid = [0, 1, 3, 4]
    pl = PlackettLuce(s, mask, m)
    mm = len(valid) if m is None else m
    total, h = 0.0, 0.0
    for pre in itertools.permutations(valid, mm):
        rank = torch.tensor([[*pre, *[v for v in valid if v not in pre], 2]])
        lp = pl.log_prob(rank).item()
        total += math.exp(lp)
        h -= math.exp(lp) * lp
    assert total == pytest.approx(1.0, abs=1e-5)
    # the entropy estimate averages to the exact entropy of the top-m distribution
    gen = torch.Generator().manual_seed(0)
    many = PlackettLuce(s.expand(4000, 5), mask.expand(4000, 5), m)
    est = many.entropy(many.sample(gen)).mean().item()
    assert est == pytest.approx(h, abs=0.03)
    if m == 1:  # exact: the categorical entropy over the valid items
        rank = many.sample(gen)
        assert many.entropy(rank).std().item() < 1e-5


def test_gradients_finite_and_scores_follow_ranking():
    net = _net(prior=2.0)
    items, mask, engine = _batch()
    s, _, _ = net(items, mask, engine)
    pl = PlackettLuce(s, mask, top_m=3)
    r = pl.sample(torch.Generator().manual_seed(3))
    (pl.log_prob(r).sum() + pl.entropy(r).sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    scores = ranking_to_scores(r, mask)
    assert scores.min() >= -10 and scores.max() <= 10
    for row in range(r.shape[0]):
        n = int(mask[row].sum())
        order = torch.argsort(-scores[row], stable=True)[:n]
        assert torch.equal(order, r[row, :n])
    # the mode: prefix by logit, the rest in slot order
    mode = PlackettLuce(s.detach(), mask, top_m=2).mode()
    row0 = torch.nonzero(mask[0]).flatten()
    best = row0[torch.argsort(-s.detach()[0, row0])][:2]
    assert torch.equal(mode[0, :2], best)
    rest = [i for i in row0.tolist() if i not in best.tolist()]
    assert mode[0, 2:len(row0)].tolist() == rest


def test_obs_to_tensors_adds_batch_dim():
    import numpy as np

    obs = {"items": np.zeros((4, 5), np.float32), "mask": np.array([1, 0, 1, 0], np.int8),
           "engine": np.zeros(3, np.float32)}
    items, mask, engine = obs_to_tensors(obs)
    assert items.shape == (1, 4, 5) and mask.dtype == torch.bool and engine.shape == (1, 3)
    net = _net()
    empty = {"items": torch.zeros(1, 4, 5), "mask": torch.zeros(1, 4, dtype=torch.bool),
             "engine": torch.zeros(1, 3)}
    s, b, v = net(empty["items"], empty["mask"], empty["engine"])
    assert torch.isinf(s).all() and torch.isfinite(b).all() and torch.isfinite(v).all()
