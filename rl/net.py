"""Permutation-equivariant actor-critic for learned Stage II.

The same weights score every candidate: a shared encoder MLP over ``[item features, engine
features]`` (no positional encoding — the slot index carries no meaning to the network beyond the
``value_rank`` feature the observation itself provides), optionally one self-attention layer over
the valid candidates (key-padding mask) so that a score can depend on who else waits, then:

* **score head** — per-item logit (``-inf`` at masked slots): the Plackett–Luce utilities of the
  ranking (:mod:`rl.distributions`);
* **budget head** — logits over the token-budget bins from a pooled summary (masked mean and max
  of the item embeddings) concatenated with the engine features;
* **value head** — the critic, on the same kind of pooled summary of its own per-item
  encoder (``shared_critic=False``, the default: large value-loss gradients stay out of the
  actor's features) or of the actor's embeddings.

Permuting the K slots permutes the scores and leaves the budget logits and the value unchanged
(up to float rounding). A linear skip from the item features to the score (``prior_index``,
``prior_scale``) lets training start from AugServe's own order (its rank is an item feature).
About 40k parameters at the default width, so CPU rollouts are cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    """Shapes and widths of :class:`ScorerNet` (saved with every checkpoint)."""

    f: int  # item features
    g: int  # engine features
    n_bins: int  # token-budget bins
    hidden: int = 64  # embedding width
    attention: bool = True  # one self-attention layer over the candidates
    heads: int = 4  # attention heads (hidden % heads == 0)
    prior_index: int | None = None  # item feature with a linear skip into the score
    prior_scale: float = 0.0  # initial skip weight (the score starts as -scale * feature)
    shared_critic: bool = False  # critic on the actor's embeddings (else its own encoder)

    def to_dict(self) -> dict:
        return asdict(self)


def _seq(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``seq(x)`` for a Sequential of Linear and Tanh layers, without per-module call
    overhead (the same operations: a decision runs this on every scheduling step)."""
    for layer in seq:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight, layer.bias)
        elif isinstance(layer, nn.Tanh):
            x = torch.tanh(x)
        else:
            x = layer(x)
    return x


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class ScorerNet(nn.Module):
    """Actor-critic over a candidate set; see the module docstring."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        if cfg.attention and cfg.hidden % cfg.heads:
            raise ValueError(f"hidden={cfg.hidden} is not a multiple of heads={cfg.heads}")
        self.cfg = cfg
        h = cfg.hidden
        self.encoder = nn.Sequential(nn.Linear(cfg.f + cfg.g, h), nn.Tanh(), nn.Linear(h, h),
                                     nn.Tanh())
        self.attn = (nn.MultiheadAttention(h, cfg.heads, batch_first=True)
                     if cfg.attention else None)
        self.norm = nn.LayerNorm(h) if cfg.attention else None
        self.score_head = _mlp(h, h, 1)
        # linear skip from the item features to the score: with ``prior_index`` = AugServe's
        # rank, the initial ranking is AugServe's order, explored around by the PL noise
        self.skip = nn.Linear(cfg.f, 1, bias=False)
        nn.init.zeros_(self.skip.weight)
        if cfg.prior_index is not None:
            with torch.no_grad():
                self.skip.weight[0, cfg.prior_index] = -cfg.prior_scale
        self.budget_head = _mlp(2 * h + cfg.g, h, cfg.n_bins)
        # the critic's own per-item encoder keeps large value-loss gradients out of the actor
        self.critic_encoder = None if cfg.shared_critic else nn.Sequential(
            nn.Linear(cfg.f + cfg.g, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        self.value_head = _mlp(2 * h + cfg.g, h, 1)
        for head in (self.score_head, self.budget_head):  # near-uniform initial policy
            nn.init.normal_(head[-1].weight, std=0.01)
            nn.init.zeros_(head[-1].bias)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, engine: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``items [B,K,F]``, ``mask [B,K]`` (nonzero = valid), ``engine [B,G]`` →
        (score logits ``[B,K]`` with ``-inf`` at masked slots, budget logits ``[B,n_bins]``,
        value ``[B]``). A row without any valid item gets all ``-inf`` scores."""
        scores, budget, summary, valid, inputs = self._actor(items, mask, engine)
        if self.critic_encoder is not None:
            v_summary = self._pool(self.critic_encoder(inputs), valid, engine)
        else:
            v_summary = summary
        return scores, budget, self.value_head(v_summary).squeeze(-1)

    def act(self, items: torch.Tensor, mask: torch.Tensor, engine: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(score logits, budget logits) of :meth:`forward`, without the critic (serving)."""
        return self._actor(items, mask, engine)[:2]

    def _actor(self, items: torch.Tensor, mask: torch.Tensor, engine: torch.Tensor) -> tuple:
        valid = mask.bool()
        b, k, _ = items.shape
        eng = engine.unsqueeze(1).expand(b, k, engine.shape[-1])
        inputs = torch.cat([items, eng], dim=-1)
        x = _seq(self.encoder, inputs)  # [B,K,H]
        if self.attn is not None:
            # a row with no valid item would make attention NaN: let it attend to slot 0
            pad = ~valid
            pad[:, 0] &= valid.any(dim=1)
            a, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
            x = self.norm(x + a)
        summary = self._pool(x, valid, engine)
        scores = (_seq(self.score_head, x) + F.linear(items, self.skip.weight)).squeeze(-1)
        scores = scores.masked_fill(~valid, float("-inf"))
        return scores, _seq(self.budget_head, summary), summary, valid, inputs

    @staticmethod
    def _pool(x: torch.Tensor, valid: torch.Tensor, engine: torch.Tensor) -> torch.Tensor:
        """``[masked mean, masked max, engine]`` of item embeddings ``x [B,K,H]``."""
        m = valid.unsqueeze(-1).to(x.dtype)
        mean = (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        mx = x.masked_fill(~valid.unsqueeze(-1), -1e9).amax(dim=1)
        mx = torch.where(valid.any(dim=1, keepdim=True), mx, torch.zeros_like(mx))
        return torch.cat([mean, mx, engine], dim=-1)

    def value(self, items: torch.Tensor, mask: torch.Tensor, engine: torch.Tensor
              ) -> torch.Tensor:
        """The critic alone, ``[B]``."""
        return self.forward(items, mask, engine)[2]


def obs_to_tensors(obs: dict, device: str | torch.device = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (batched or single) observation dict → float items, bool mask, float engine tensors,
    with a batch dimension added to a single observation."""
    items = torch.as_tensor(obs["items"], dtype=torch.float32, device=device)
    mask = torch.as_tensor(obs["mask"], device=device).bool()
    engine = torch.as_tensor(obs["engine"], dtype=torch.float32, device=device)
    if items.dim() == 2:
        items, mask, engine = items.unsqueeze(0), mask.unsqueeze(0), engine.unsqueeze(0)
    return items, mask, engine


def num_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
