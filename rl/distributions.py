"""Top-m Plackett–Luce rankings over the valid candidates, and their conversion to env actions.

A Plackett–Luce (PL) model with utilities ``s`` draws a ranking by repeatedly picking one of the
items left with probability ``softmax(s over the items left)``. Sampling is the Gumbel-top-k
trick (sort ``s + Gumbel noise``), and the log-probability of a ranking π of n items is exact::

    log p(π) = Σ_{i<n} [ s_{π_i} − logsumexp(s_{π_i}, …, s_{π_{n−1}}) ]

**Top-m PL.** Admission only ever reaches the first few candidates of a ranking (one to a few
requests start per step), so the action is the ordered *prefix* of ``m`` items (``top_m``; the
sum above runs over ``i < min(m, n)``, which is exactly the PL probability of that prefix). The
valid items after the prefix keep their slot order — AugServe's own order, which does not depend
on the network — so the log-probability of the action the env receives is exact, not an
approximation that ignores part of it. ``top_m=None`` (or ≥ K) ranks everything.

**Entropy.** ``entropy()`` returns Σ_{i<min(m,n)} H(softmax(s over the items left at position
i of the *sampled* ranking)). By the chain rule its expectation is the entropy of the top-m
distribution (an unbiased, low-variance estimate; exact for m = 1, where it is the categorical
entropy over the valid items). Masked slots are never sampled and have probability zero.
"""

from __future__ import annotations

import numpy as np
import torch

#: finite stand-in for -inf inside the log-sum-exps (keeps gradients NaN-free)
_NEG = -1e9


class PlackettLuce:
    """Top-m PL over ``logits [B,K]`` restricted to ``mask [B,K]`` (True = valid)."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor, top_m: int | None = None
                 ) -> None:
        if logits.shape != mask.shape or logits.dim() != 2:
            raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} "
                             "must both be [B, K]")
        if top_m is not None and top_m < 1:
            raise ValueError(f"top_m={top_m} must be >= 1 (or None for full rankings)")
        self.mask = mask.bool()
        self.logits = torch.where(self.mask, logits, torch.full_like(logits, _NEG))
        k = logits.shape[1]
        self.m = k if top_m is None else min(int(top_m), k)
        self.n = self.mask.sum(dim=1)  # valid items per row

    # ------------------------------------------------------------------ rankings
    def _complete(self, prefix: torch.Tensor) -> torch.Tensor:
        """Full ranking ``[B,K]``: ``prefix [B,m]`` (entries past a row's n are ignored), then
        the other valid slots in slot order, then the masked slots in slot order."""
        b, k = self.mask.shape
        pos = torch.arange(self.m, device=prefix.device).expand(b, self.m)
        in_prefix = pos < self.n.unsqueeze(1)
        key = torch.arange(k, device=prefix.device, dtype=torch.float32).expand(b, k)
        key = key + torch.where(self.mask, 0.0, 2.0 * k)  # masked slots last
        key = torch.cat([key, torch.zeros(b, 1, device=prefix.device)], dim=1)
        # the counted prefix first, in its order; uncounted positions go to a dummy column
        key.scatter_(1, torch.where(in_prefix, prefix, k), pos.float() - 2.0 * k)
        key = key[:, :k]
        return key.argsort(dim=1, stable=True)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A ranking ``[B,K]`` (slot indices, best first) by Gumbel-top-m."""
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device)
        g = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        keys = torch.where(self.mask, self.logits + g, torch.full_like(self.logits, 2 * _NEG))
        prefix = keys.argsort(dim=1, descending=True, stable=True)[:, : self.m]
        return self._complete(prefix)

    def mode(self) -> torch.Tensor:
        """The most likely ranking ``[B,K]``: prefix by descending logit, the rest as usual."""
        keys = torch.where(self.mask, self.logits, torch.full_like(self.logits, 2 * _NEG))
        return self._complete(keys.argsort(dim=1, descending=True, stable=True)[:, : self.m])

    # ------------------------------------------------------------------ probabilities
    def _prefix_terms(self, ranking: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
        """Utilities along the ranking ``[B,K]``, the suffix log-sum-exps at the first m
        positions ``[B,m]`` and which of those positions count ``[B,m]``."""
        s = self.logits.gather(1, ranking)  # [B,K], _NEG at masked slots (they come last)
        lse = torch.logcumsumexp(s.flip(1), dim=1).flip(1)[:, : self.m]
        pos = torch.arange(self.m, device=s.device).expand(s.shape[0], self.m)
        counted = pos < self.n.unsqueeze(1)
        return s, lse, counted

    def log_prob(self, ranking: torch.Tensor) -> torch.Tensor:
        """Exact log-probability ``[B]`` of the first ``min(m, n)`` positions of ``ranking``."""
        s, lse, counted = self._prefix_terms(ranking)
        terms = s[:, : self.m] - lse
        return torch.where(counted, terms, torch.zeros_like(terms)).sum(dim=1)

    def entropy(self, ranking: torch.Tensor) -> torch.Tensor:
        """Σ over the counted positions of the entropy of the next pick given the sampled
        prefix of ``ranking`` ``[B]`` (see the module docstring)."""
        s, lse, counted = self._prefix_terms(ranking)
        b, k = s.shape
        # left[b, i, j]: item at position j is still available at position i (j >= i, valid)
        pos_i = torch.arange(self.m, device=s.device).view(1, self.m, 1)
        pos_j = torch.arange(k, device=s.device).view(1, 1, k)
        left = (pos_j >= pos_i) & (pos_j < self.n.view(b, 1, 1))
        # log-probabilities of the items left; _NEG elsewhere so that exp() never overflows
        logp = torch.where(left, s.unsqueeze(1) - lse.unsqueeze(2), _NEG)  # [B,m,K]
        p = torch.where(left, logp.exp(), 0.0)
        h = -(p * torch.where(left, logp, 0.0)).sum(dim=2)  # [B,m]
        return torch.where(counted, h, torch.zeros_like(h)).sum(dim=1)


def ranking_to_scores(ranking: torch.Tensor | list, mask: torch.Tensor | list,
                      low: float = -10.0, high: float = 10.0) -> torch.Tensor:
    """The env's ``scores`` action ``[B,K]`` (or ``[K]``) that makes it try slots exactly in
    ``ranking`` order: valid slots get ``high − (high − low)·position/K`` (strictly decreasing,
    inside ``[low, high]``), masked slots ``low``."""
    ranking = torch.as_tensor(ranking)
    mask = torch.as_tensor(mask).bool()
    single = ranking.dim() == 1
    if single:
        ranking, mask = ranking.unsqueeze(0), mask.unsqueeze(0)
    b, k = ranking.shape
    pos = torch.empty_like(ranking)
    pos.scatter_(1, ranking, torch.arange(k, device=ranking.device).expand(b, k))
    scores = high - (high - low) * pos.float() / k
    scores = torch.where(mask, scores, torch.full_like(scores, low))
    return scores[0] if single else scores


def greedy_scores(logits: np.ndarray, mask: np.ndarray, top_m: int | None = None,
                  low: float = -10.0, high: float = 10.0) -> np.ndarray:
    """``ranking_to_scores(PlackettLuce(logits, mask, top_m).mode(), mask)`` for one row
    ``[K]`` in numpy (the same values; serving calls it at every decision, where a dozen small
    torch ops cost more than the network): the ``top_m`` valid slots by descending logit
    (ties: lower slot first), then the other valid slots, then the masked ones, in slot
    order."""
    valid = np.asarray(mask) != 0
    k = valid.shape[0]
    m = k if top_m is None else min(int(top_m), k)
    slots = np.flatnonzero(valid)
    head = slots[np.argsort(-np.asarray(logits, dtype=np.float32)[slots], kind="stable")[:m]]
    later = valid.copy()
    later[head] = False
    ranking = np.concatenate([head, np.flatnonzero(later), np.flatnonzero(~valid)])
    pos = np.empty(k, dtype=np.float32)
    pos[ranking] = np.arange(k, dtype=np.float32)
    scores = np.float32(high) - np.float32(high - low) * pos / np.float32(k)
    scores[~valid] = low
    return scores.astype(np.float64)
