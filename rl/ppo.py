"""PPO for learned Stage II, in one readable module (CleanRL style).

One iteration: every env of a ``gymnasium.vector.SyncVectorEnv`` of :class:`rl.env.SchedulingEnv`
takes ``n_steps`` decisions with the current policy (rankings sampled from a top-m
Plackett–Luce distribution, :mod:`rl.distributions`, plus a token-budget bin from a categorical),
then ``epochs`` passes of minibatch updates of the clipped surrogate, a (clipped) value loss and
an entropy bonus, with GAE advantages (normalized per minibatch) and gradient-norm clipping.

**Episodes and seeds.** Episode ``j`` of env ``i`` is the workload window drawn from seed
``seed_start + j`` when ``same_seed_envs`` (every env plays the same arrival sequences, in the
same order — Decima's variance reduction: the rollouts of a batch differ by the policy's choices,
not by their input) and from ``seed_start + j·n_envs + i`` otherwise. The vector env runs without
autoreset; finished envs are reset here with those seeds, and episodes continue across
iterations. Truncated episodes (``max_decisions``) are bootstrapped with the critic.

**Stagger.** Episodes are workload windows whose load builds up (a light start, an overloaded
end); envs started together stay in phase, so a whole batch would come from one phase (and
per-minibatch advantage normalization would blow the near-zero advantages of light phases up to
unit scale). ``stagger > 0`` first runs env i ``i·stagger`` decisions into its first episode with
the initial policy (not trained on, not counted in ``total_steps``), so that every batch mixes
phases. With ``same_seed_envs`` the envs still play the same windows.

**Time-based discounting.** Decisions are events, not clock ticks: a policy that makes them
denser (e.g. smaller token budgets, so shorter steps) would push every future penalty further
away in decisions and look better under a per-decision discount without being better. With
``gamma_per_s`` the discount after a step is ``gamma_per_s ** dt`` (dt = simulated seconds the
step advanced the clock, a semi-MDP), so a penalty at a given time weighs the same whatever the
number of decisions before it. ``gamma_per_s = 0.8``: a 4.5 s time constant (TTFT SLO: 1 s).

Determinism: ``torch.manual_seed``, a seeded ``torch.Generator`` for the actions and a seeded
numpy generator for the minibatches; the simulator is deterministic given the seed, so the same
config gives the same losses and returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl.distributions import PlackettLuce, ranking_to_scores
from rl.net import NetConfig, ScorerNet, obs_to_tensors


@dataclass
class PPOConfig:
    """PPO hyper-parameters (see the module docstring)."""

    total_steps: int = 200_000  # env decisions over all envs
    n_envs: int = 4
    n_steps: int = 256  # decisions per env per iteration
    epochs: int = 4
    minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99  # discount per decision (when gamma_per_s is None)
    gamma_per_s: float | None = 0.8  # discount per simulated second (semi-MDP; see below)
    gae_lambda: float = 0.95
    clip: float = 0.2
    clip_vloss: bool = True
    vf_coef: float = 0.5
    ent_coef: float = 0.001  # on the ranking entropy (nats, summed over the m picks)
    budget_ent_coef: float = 0.01  # on the budget entropy
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    target_kl: float | None = None  # stop the epochs of an iteration past this approx KL
    reward_scale: float = 0.1  # rewards are multiplied by this for the critic and the loss
    top_m: int | None = 8  # PL prefix length that is the action (None = full ranking)
    same_seed_envs: bool = True
    seed: int = 0  # torch and minibatch seed
    seed_start: int = 10_000  # first episode seed (keep clear of evaluation seeds)
    stagger: int = 0  # env i starts i·stagger decisions into its first episode (see below)
    torch_threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rollout:
    """Storage for one iteration, ``[T, N, ...]``."""

    items: torch.Tensor
    mask: torch.Tensor
    engine: torch.Tensor
    ranking: torch.Tensor
    budget: torch.Tensor
    logprob: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor  # the observation at t starts a new episode
    value: torch.Tensor
    discount: torch.Tensor  # discount applied after step t (gamma, or gamma_per_s ** dt)

    @classmethod
    def empty(cls, t: int, n: int, k: int, f: int, g: int) -> Rollout:
        z = torch.zeros
        return cls(z(t, n, k, f), z(t, n, k, dtype=torch.bool), z(t, n, g),
                   z(t, n, k, dtype=torch.long), z(t, n, dtype=torch.long), z(t, n), z(t, n),
                   z(t, n), z(t, n), z(t, n))


@dataclass
class EpisodeStats:
    """Finished episodes: undiscounted return, SLO-good and TTFT-late requests, requests in
    the window, seed."""

    returns: list[float] = field(default_factory=list)
    good: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def make_vector_env(env_fns: Sequence[Callable[[], gym.Env]]) -> gym.vector.SyncVectorEnv:
    """A SyncVectorEnv without autoreset (the trainer resets finished envs with its seeds)."""
    return gym.vector.SyncVectorEnv(list(env_fns),
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED)


def episode_seed(cfg: PPOConfig, env: int, episode: int) -> int:
    """Seed of episode ``episode`` (0-based) of env ``env``."""
    if cfg.same_seed_envs:
        return cfg.seed_start + episode
    return cfg.seed_start + episode * cfg.n_envs + env


def gae(reward: torch.Tensor, value: torch.Tensor, done: torch.Tensor, next_value: torch.Tensor,
        next_done: torch.Tensor, gamma: float | torch.Tensor, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns ``[T, N]``; ``gamma`` is a number or the
    discount of each step ``[T, N]`` (time-based discounting)."""
    g = torch.as_tensor(gamma, dtype=reward.dtype).expand_as(reward)
    t_len = reward.shape[0]
    adv = torch.zeros_like(reward)
    last = torch.zeros_like(next_value)
    for t in reversed(range(t_len)):
        if t == t_len - 1:
            nonterminal, nv = 1.0 - next_done, next_value
        else:
            nonterminal, nv = 1.0 - done[t + 1], value[t + 1]
        delta = reward[t] + g[t] * nv * nonterminal - value[t]
        last = delta + g[t] * lam * nonterminal * last
        adv[t] = last
    return adv, adv + value


class PPOTrainer:
    """Holds the vector env, the network, the optimizer and the running state."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], cfg: PPOConfig,
                 net_cfg: NetConfig, init: Callable[[ScorerNet], None] | None = None) -> None:
        if cfg.n_envs != len(env_fns):
            raise ValueError(f"n_envs={cfg.n_envs} but {len(env_fns)} env constructors")
        self.cfg = cfg
        torch.set_num_threads(max(int(cfg.torch_threads), 1))
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.envs = make_vector_env(env_fns)
        self.net = ScorerNet(net_cfg)
        if init is not None:
            init(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)
        self.batch = cfg.n_envs * cfg.n_steps
        self.iterations = max(cfg.total_steps // self.batch, 1)
        self.iteration = 0
        self.global_step = 0
        self.ep_return = np.zeros(cfg.n_envs)
        self.stats = EpisodeStats()
        seeds = [episode_seed(cfg, i, 0) for i in range(cfg.n_envs)]
        self.obs, infos = self.envs.reset(seed=seeds)
        self.cur_seed = list(seeds)
        self.cur_requests = [int(x) for x in infos.get("requests", [0] * cfg.n_envs)]
        self.episodes = [1] * cfg.n_envs  # episodes started per env
        self.next_done = torch.zeros(cfg.n_envs)
        self.now = np.zeros(cfg.n_envs)  # simulated time of each env's last step (s)
        self.warmup_steps = self._stagger()

    def discount(self, infos: dict) -> torch.Tensor:
        """Discount after this step, per env: ``gamma``, or ``gamma_per_s ** dt`` with dt the
        simulated seconds the step took (from ``info["now_s"]``)."""
        cfg = self.cfg
        if cfg.gamma_per_s is None or "now_s" not in infos:
            return torch.full((cfg.n_envs,), float(cfg.gamma))
        now = np.asarray(infos["now_s"], dtype=np.float64)
        dt = np.maximum(now - self.now, 0.0)
        self.now = now
        return torch.as_tensor(cfg.gamma_per_s ** dt, dtype=torch.float32)

    def _stagger(self) -> int:
        """Desynchronize the envs (see the module docstring); returns the decisions taken."""
        n, s = self.cfg.n_envs, self.cfg.stagger
        if s <= 0 or n < 2:
            return 0
        total = (n - 1) * s
        for j in range(total):
            action = self.act(self.obs)[0]
            obs, reward, term, trunc, infos = self.envs.step(action)
            self.ep_return += reward
            self.discount(infos)  # tracks the clock
            # env i restarts its first window at step total - i·s; env n-1 never restarts
            restart = np.array([j + 1 == total - i * s for i in range(n)])
            restart |= np.logical_or(term, trunc)
            if restart.any():
                seeds = [episode_seed(self.cfg, i, 0) for i in range(n)]
                obs, rinfo = self.envs.reset(seed=seeds, options={"reset_mask": restart})
                self.ep_return[restart] = 0.0
                self.now[restart] = 0.0
                for i in np.flatnonzero(restart):
                    self.cur_requests[i] = int(rinfo.get("requests", self.cur_requests)[i])
            self.obs = obs
        return total * n

    # ------------------------------------------------------------------ acting
    def act(self, obs: dict) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor]:
        """Sample an action for a batched observation: (env action, ranking, budget bin,
        log-prob, value)."""
        items, mask, engine = obs_to_tensors(obs)
        with torch.no_grad():
            logits, blogits, value = self.net(items, mask, engine)
            pl = PlackettLuce(logits, mask, self.cfg.top_m)
            ranking = pl.sample(self.gen)
            budget = torch.multinomial(torch.softmax(blogits, dim=-1), 1,
                                       generator=self.gen).squeeze(1)
            logprob = pl.log_prob(ranking) + torch.log_softmax(blogits, -1).gather(
                1, budget.unsqueeze(1)).squeeze(1)
        scores = ranking_to_scores(ranking, mask).numpy().astype(np.float32)
        action = {"scores": scores, "budget": budget.numpy().astype(np.int64)}
        return action, ranking, budget, logprob, value

    def collect(self) -> Rollout:
        """``n_steps`` decisions in every env with the current policy."""
        cfg = self.cfg
        k, f = self.obs["items"].shape[1:]
        g = self.obs["engine"].shape[1]
        buf = Rollout.empty(cfg.n_steps, cfg.n_envs, k, f, g)
        for t in range(cfg.n_steps):
            items, mask, engine = obs_to_tensors(self.obs)
            buf.items[t], buf.mask[t], buf.engine[t] = items, mask, engine
            buf.done[t] = self.next_done
            action, ranking, budget, logprob, value = self.act(self.obs)
            buf.ranking[t], buf.budget[t], buf.logprob[t], buf.value[t] = (
                ranking, budget, logprob, value)
            obs, reward, term, trunc, infos = self.envs.step(action)
            self.global_step += cfg.n_envs
            self.ep_return += reward
            r = torch.as_tensor(reward, dtype=torch.float32) * cfg.reward_scale
            disc = self.discount(infos)
            buf.discount[t] = disc
            ended = np.logical_or(term, trunc)
            if trunc.any():  # bootstrap a cut episode from its last observation
                with torch.no_grad():
                    v_final = self.net.value(*obs_to_tensors(obs))
                r += disc * v_final * torch.as_tensor(trunc & ~term, dtype=torch.float32)
            buf.reward[t] = r
            if ended.any():
                for i in np.flatnonzero(ended):
                    self.stats.returns.append(float(self.ep_return[i]))
                    self.stats.good.append(int(infos["good"][i]))
                    self.stats.late.append(int(infos["late"][i]))
                    self.stats.seeds.append(self.cur_seed[i])
                    self.stats.requests.append(self.cur_requests[i])
                    self.ep_return[i] = 0.0
                seeds = [episode_seed(cfg, i, self.episodes[i]) for i in range(cfg.n_envs)]
                obs, rinfo = self.envs.reset(seed=seeds, options={"reset_mask": ended})
                self.now[ended] = 0.0
                for i in np.flatnonzero(ended):
                    self.cur_seed[i] = seeds[i]
                    if "requests" in rinfo:
                        self.cur_requests[i] = int(rinfo["requests"][i])
                    self.episodes[i] += 1
            self.obs = obs
            self.next_done = torch.as_tensor(ended, dtype=torch.float32)
        return buf

    # ------------------------------------------------------------------ learning
    def evaluate(self, items: torch.Tensor, mask: torch.Tensor, engine: torch.Tensor,
                 ranking: torch.Tensor, budget: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-prob, ranking entropy, budget entropy, value) of stored actions."""
        logits, blogits, value = self.net(items, mask, engine)
        pl = PlackettLuce(logits, mask, self.cfg.top_m)
        blog = torch.log_softmax(blogits, -1)
        logprob = pl.log_prob(ranking) + blog.gather(1, budget.unsqueeze(1)).squeeze(1)
        b_ent = -(blog.exp() * blog).sum(-1)
        return logprob, pl.entropy(ranking), b_ent, value

    def update(self, buf: Rollout) -> dict[str, float]:
        """PPO epochs over the rollout; returns the iteration's losses and diagnostics."""
        cfg = self.cfg
        with torch.no_grad():
            next_value = self.net.value(*obs_to_tensors(self.obs))
        adv, ret = gae(buf.reward, buf.value, buf.done, next_value, self.next_done, buf.discount,
                       cfg.gae_lambda)
        flat = lambda x: x.reshape(self.batch, *x.shape[2:])  # noqa: E731
        items, mask, engine = flat(buf.items), flat(buf.mask), flat(buf.engine)
        ranking, budget, old_lp = flat(buf.ranking), flat(buf.budget), flat(buf.logprob)
        adv, ret, old_v = flat(adv), flat(ret), flat(buf.value)
        mb = max(self.batch // cfg.minibatches, 1)
        logs: dict[str, list[float]] = {k: [] for k in (
            "pg_loss", "v_loss", "entropy", "budget_entropy", "approx_kl", "clipfrac")}
        stop = False
        for _ in range(cfg.epochs):
            perm = torch.as_tensor(self.np_rng.permutation(self.batch))
            for start in range(0, self.batch, mb):
                idx = perm[start:start + mb]
                lp, ent, b_ent, v = self.evaluate(items[idx], mask[idx], engine[idx],
                                                  ranking[idx], budget[idx])
                log_ratio = lp - old_lp[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip).float().mean()
                a = adv[idx]
                if cfg.norm_adv and len(idx) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio,
                                    -a * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                if cfg.clip_vloss:
                    v_clip = old_v[idx] + (v - old_v[idx]).clamp(-cfg.clip, cfg.clip)
                    v_loss = 0.5 * torch.max((v - ret[idx]) ** 2,
                                             (v_clip - ret[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((v - ret[idx]) ** 2).mean()
                loss = (pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent.mean()
                        - cfg.budget_ent_coef * b_ent.mean())
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for key, val in (("pg_loss", pg_loss), ("v_loss", v_loss),
                                 ("entropy", ent.mean()), ("budget_entropy", b_ent.mean()),
                                 ("approx_kl", approx_kl), ("clipfrac", clipfrac)):
                    logs[key].append(float(val.detach()))
            if cfg.target_kl is not None and logs["approx_kl"][-1] > cfg.target_kl:
                stop = True
                break
        var = float(ret.var())
        out = {key: float(np.mean(v)) for key, v in logs.items()}
        out["explained_var"] = (float("nan") if var == 0
                                else 1.0 - float((ret - old_v).var()) / var)
        out["early_stop"] = float(stop)
        return out

    def step(self) -> dict[str, float]:
        """One iteration (rollout + update); returns its log row."""
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / self.iterations
            for group in self.opt.param_groups:
                group["lr"] = frac * cfg.lr
        n_done = len(self.stats.returns)
        t0 = time.perf_counter()
        buf = self.collect()
        t1 = time.perf_counter()
        row = self.update(buf)
        t2 = time.perf_counter()
        self.iteration += 1
        new = slice(n_done, None)
        mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
        row.update({
            "iteration": self.iteration,
            "env_steps": self.global_step,
            "episodes": len(self.stats.returns),
            "ep_return": mean(self.stats.returns[new]),
            "ep_good": mean(self.stats.good[new]),
            "ep_late": mean(self.stats.late[new]),
            "ep_attainment": mean([g / max(n, 1) for g, n in zip(
                self.stats.good[new], self.stats.requests[new], strict=True)]),
            "reward_per_step": float(buf.reward.mean()) / cfg.reward_scale,
            "budget_mean_bin": float(buf.budget.float().mean()),
            "lr": self.opt.param_groups[0]["lr"],
            "steps_per_s": self.batch / max(t1 - t0, 1e-9),
            "rollout_s": t1 - t0,
            "update_s": t2 - t1,
        })
        return row

    def close(self) -> None:
        self.envs.close()


def train_ppo(env_fns: Sequence[Callable[[], gym.Env]], cfg: PPOConfig, net_cfg: NetConfig,
              init: Callable[[ScorerNet], None] | None = None,
              callback: Callable[[dict[str, float]], None] | None = None,
              progress: bool = False) -> tuple[ScorerNet, list[dict[str, float]], EpisodeStats]:
    """Train for ``cfg.total_steps`` decisions; returns the network, one log row per
    iteration and the finished episodes. ``callback(row)`` after every iteration."""
    from tqdm import tqdm

    trainer = PPOTrainer(env_fns, cfg, net_cfg, init)
    history: list[dict[str, float]] = []
    bar = tqdm(total=trainer.iterations * trainer.batch, desc="ppo", unit="step",
               disable=not progress)
    try:
        for _ in range(trainer.iterations):
            row = trainer.step()
            history.append(row)
            bar.update(trainer.batch)
            bar.set_postfix_str(f"ret {row['ep_return']:.0f} good {row['ep_good']:.0f} "
                                f"kl {row['approx_kl']:.3f} {row['steps_per_s']:.0f} st/s")
            if callback is not None:
                callback(row)
    finally:
        bar.close()
        trainer.close()
    trainer.net.eval()
    return trainer.net, history, trainer.stats
