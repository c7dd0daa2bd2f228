"""The library function behind ``python train.py agent=ppo``: train, save, evaluate.

1. PPO (:mod:`rl.ppo`) on ``n_envs`` :class:`rl.env.SchedulingEnv` copies of the configured
   setting (conf/agent/ppo.yaml: engine, workload window, K, budget bins, SLO, shaping);
2. the checkpoint (:mod:`rl.checkpoint`) to ``checkpoint_dir``;
3. ``learning_curve.csv`` / ``learning_curve.png`` (one row per iteration) in the output dir;
4. evaluation on held-out seeds: the greedy :class:`rl.rl_policy.RLPolicy` against ``augserve``
   (conf/policy/augserve.yaml's settings) on each setting of ``eval.settings`` (the training
   setting and out-of-distribution ones), effective throughput = goodput under the SLO per
   second of arrival window (:func:`augserve.serving.run_policies`); ``eval.md`` / ``eval.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from augserve.loggers import NULL_LOGGER, Logger

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _merge(base: Mapping[str, Any], over: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``over`` merged in (nested dicts merged, other values replaced)."""
    out = dict(base)
    for key, val in (over or {}).items():
        if isinstance(val, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], val)
        else:
            out[key] = val
    return out


def policy_kwargs(agent: Mapping[str, Any]) -> dict[str, Any]:
    """AugServe settings of the LearnedStage2 queue (env and served policy): ``agent.policy``
    with the env's SLO (its TTFT deadline drives AugServe's re-keying)."""
    return {**dict(agent.get("policy") or {}), "slo": agent["env"]["slo"]}


class MissReward(gym.Wrapper):
    """Reward = −(TTFT misses that became certain at this step), from ``info["late"]``.

    With a TTFT-only SLO and episodes that run until every request finished, SLO-good =
    requests − TTFT misses, so this has the same optimum as the env's reward while leaving out
    its +1 per good finish, which arrives long after the decision that earned it (after the
    request's tool calls) and is mostly noise for credit assignment.
    """

    def reset(self, **kwargs: Any) -> Any:
        self._late = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, _, term, trunc, info = self.env.step(action)
        late = int(info["late"])
        reward, self._late = float(self._late - late), late
        return obs, reward, term, trunc, info


def baseline_kwargs(baseline: str | Mapping[str, Any], profile: str | None = None
                    ) -> dict[str, Any]:
    """AugServePolicy kwargs: a dict, or a policy config file (conf/policy/augserve.yaml) whose
    ``_target_``, ``predictor`` and ``slo`` entries are left out (the caller sets those); its
    ``${tuned:...}`` values are read for the engine ``profile`` (augserve.tuned)."""
    if isinstance(baseline, str):
        from rl.rl_policy import resolve

        path = resolve(baseline)
        if not path.is_file():
            raise FileNotFoundError(f"eval.baseline: policy config {path} not found")
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert isinstance(raw, dict)
        own = {k: v for k, v in raw.items()
               if k not in ("_target_", "predictor", "slo", "label", "engine")}
        root = OmegaConf.create({"engine": {"profile": profile}, "policy": own})
        baseline = OmegaConf.to_container(root.policy, resolve=True)
    return {k: v for k, v in dict(baseline).items() if k not in ("_target_", "predictor", "slo")}


def make_env(env_cfg: Mapping[str, Any], predictor: Any, pkw: Mapping[str, Any]) -> Any:
    """A SchedulingEnv from the plain ``env`` config (engine and workload are ``_target_``s);
    ``env.reward: miss`` wraps it in :class:`MissReward` (needs a TTFT-only SLO)."""
    from augserve.slo import parse_slo
    from rl.env import SchedulingEnv

    env = SchedulingEnv(
        instantiate(env_cfg["engine"]), instantiate(env_cfg["workload"]), predictor,
        k=int(env_cfg["k"]), budget_bins=[int(b) for b in env_cfg["budget_bins"]],
        slo=env_cfg["slo"], shaping=float(env_cfg["shaping"]),
        max_decisions=env_cfg.get("max_decisions"), policy_kwargs=dict(pkw))
    mode = env_cfg.get("reward", "env")
    if mode == "miss":
        if set(parse_slo(env_cfg["slo"])) != {"ttft"}:
            raise ValueError(f"env.reward=miss needs a TTFT-only SLO, got {env_cfg['slo']!r}")
        return MissReward(env)
    if mode != "env":
        raise ValueError(f"env.reward={mode!r}: expected env or miss")
    return env


def write_curve(history: list[dict[str, float]], episodes: Any, out_dir: Path) -> Path:
    """``learning_curve.csv`` and ``learning_curve.png``; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(history[0]) if history else []
    with open(out_dir / "learning_curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(history)
    steps = np.array([h["env_steps"] for h in history])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    ep_steps = np.interp(np.arange(1, len(episodes.returns) + 1),
                         [h["episodes"] for h in history], steps) if history else []
    att = [g / max(n, 1) for g, n in zip(episodes.good, episodes.requests, strict=True)]
    ax.plot(ep_steps, att, "o", alpha=0.6, label="SLO attainment (good / requests)")
    late = [x / max(n, 1) for x, n in zip(episodes.late, episodes.requests, strict=True)]
    ax.plot(ep_steps, late, "x", alpha=0.6, label="TTFT-late / requests")
    if len(att) >= 4:
        w = max(len(att) // 8, 2)
        ax.plot(ep_steps[w - 1:], np.convolve(att, np.ones(w) / w, mode="valid"), "-",
                label=f"attainment, mean of {w}")
    ax.set_xlabel("env steps (decisions)")
    ax.set_title("training episodes (each a different seed)")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(steps, [h["reward_per_step"] for h in history], label="reward / decision")
    ax.set_xlabel("env steps")
    ax.set_title("reward per decision (unscaled)")
    ax = axes[1, 0]
    ax.plot(steps, [h["pg_loss"] for h in history], label="policy loss")
    ax.plot(steps, [h["v_loss"] for h in history], label="value loss")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("env steps")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot(steps, [h["entropy"] for h in history], label="ranking entropy (nats)")
    ax.plot(steps, [h["budget_entropy"] for h in history], label="budget entropy (nats)")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["approx_kl"] for h in history], "k:", label="approx KL")
    ax.set_xlabel("env steps")
    ax.legend(fontsize=8, loc="upper left")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    png = out_dir / "learning_curve.png"
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def evaluate(agent: Mapping[str, Any], checkpoint: str | Path, predictor: Any, out_dir: Path,
             progress: bool = False) -> dict[str, Any]:
    """RLPolicy vs AugServe on every eval setting and held-out seed; returns eval.json's dict."""
    from augserve.sched.augserve import AugServePolicy
    from augserve.serving import run_policies
    from rl.rl_policy import RLPolicy

    ev = agent["eval"]
    slo = agent["env"]["slo"]
    seeds = [int(s) for s in ev["seeds"]]
    res: dict[str, Any] = {"seeds": seeds, "slo": slo, "settings": {}}
    for name, over in (ev.get("settings") or {"train": {}}).items():
        if over is None:  # a setting switched off (agent.eval.settings.<name>=null)
            continue
        env_cfg = _merge(agent["env"], over)
        workload, engine = instantiate(env_cfg["workload"]), instantiate(env_cfg["engine"])
        window = float(env_cfg["workload"]["duration_s"])
        per: dict[str, list[dict[str, Any]]] = {"rl": [], "augserve": []}
        for seed in seeds:
            policies = {
                "rl": RLPolicy(checkpoint, predictor, **policy_kwargs(agent)),
                "augserve": AugServePolicy(predictor, slo=slo, **baseline_kwargs(
                    ev["baseline"], env_cfg["engine"].get("profile"))),
            }
            sums = run_policies(workload, engine, policies, slo, seed,
                                out_dir / "eval" / name / f"seed{seed}", progress=progress,
                                plots=False)
            for pol, s in sums.items():
                per[pol].append({k: s.get(k) for k in (
                    "goodput", "slo_attainment", "num_requests", "median_ttft_ms",
                    "p99_ttft_ms", "preemptions", "wall_s")})
        rl_g = [r["goodput"] for r in per["rl"]]
        au_g = [r["goodput"] for r in per["augserve"]]
        res["settings"][name] = {
            "workload": env_cfg["workload"], "engine": env_cfg["engine"], "window_s": window,
            "per_seed": per,
            "rl_goodput": float(np.mean(rl_g)), "augserve_goodput": float(np.mean(au_g)),
            "ratio": float(np.mean(rl_g) / np.mean(au_g)) if np.mean(au_g) > 0 else math.nan,
            "rl_attainment": float(np.mean([r["slo_attainment"] for r in per["rl"]])),
            "augserve_attainment": float(np.mean([r["slo_attainment"]
                                                  for r in per["augserve"]])),
        }
    return res


def eval_table(res: Mapping[str, Any]) -> str:
    """Markdown table of :func:`evaluate`'s result."""
    lines = [f"Effective throughput = goodput under `{res['slo']}` (req/s of arrival window), "
             f"mean over held-out seeds {res['seeds']}.", "",
             "| setting | workload | rl goodput | augserve goodput | rl / augserve | "
             "rl SLO att. | augserve SLO att. | per-seed rl / augserve |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, s in res["settings"].items():
        wl = s["workload"]
        desc = (f"{str(wl.get('_target_', '')).rsplit('.', 1)[-1].removeprefix('make_')} "
                f"{wl.get('rate')} req/s, {s['window_s']:.0f} s")
        per = ", ".join(f"{a['goodput']:.2f}/{b['goodput']:.2f}"
                        for a, b in zip(s["per_seed"]["rl"], s["per_seed"]["augserve"],
                                        strict=True))
        lines.append(f"| {name} | {desc} | {s['rl_goodput']:.3f} | {s['augserve_goodput']:.3f} "
                     f"| {s['ratio']:.3f}x | {100 * s['rl_attainment']:.1f}% "
                     f"| {100 * s['augserve_attainment']:.1f}% | {per} |")
    return "\n".join(lines)


def train_agent(agent_cfg: DictConfig | Mapping[str, Any], out_dir: str | Path,
                logger: Logger = NULL_LOGGER, progress: bool = True) -> dict[str, Any]:
    """Train the configured agent, save its checkpoint, evaluate it; returns eval.json's dict
    (plus ``train``: wall time, steps, checkpoint path)."""
    import torch

    from rl.checkpoint import save_checkpoint
    from rl.net import NetConfig, ScorerNet, num_parameters
    from rl.obs import ENGINE_FEATURES, ITEM_FEATURES, ObsSpec
    from rl.ppo import PPOConfig, train_ppo

    agent = _plain(agent_cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if agent.get("name", "ppo") != "ppo":
        raise ValueError(f"unknown agent {agent.get('name')!r} (only ppo)")
    predictor = instantiate(agent["predictor"])
    env_cfg = agent["env"]
    pkw = policy_kwargs(agent)
    ppo = PPOConfig(**agent["ppo"])
    held = {int(s) for s in agent["eval"]["seeds"]}
    n_eps = ppo.total_steps // 1000 + 1000  # generous bound on episodes started
    train_seeds = range(ppo.seed_start, ppo.seed_start + n_eps * (1 if ppo.same_seed_envs
                                                                  else ppo.n_envs))
    if held & set(train_seeds):
        raise ValueError(f"eval seeds {sorted(held & set(train_seeds))} overlap the training "
                         f"seeds from seed_start={ppo.seed_start}: move one of them")
    spec = ObsSpec(k=int(env_cfg["k"]), budget_bins=tuple(int(b) for b in env_cfg["budget_bins"]))
    net_kw = dict(agent.get("net") or {})
    prior = net_kw.pop("rank_prior", 0.0)
    net_cfg = NetConfig(f=len(ITEM_FEATURES), g=len(ENGINE_FEATURES),
                        n_bins=len(spec.budget_bins),
                        prior_index=ITEM_FEATURES.index("value_rank") if prior else None,
                        prior_scale=float(prior) * spec.k, **net_kw)
    init_bin = agent.get("init_budget")

    def init(net: Any) -> None:
        if init_bin is not None:  # start near one budget (AugServe's static N_max)
            i = int(np.argmin([abs(b - int(init_bin)) for b in spec.budget_bins]))
            with torch.no_grad():
                net.budget_head[-1].bias[i] = 2.0

    env_fns = [lambda: make_env(env_cfg, predictor, pkw) for _ in range(ppo.n_envs)]
    print(f"PPO: {ppo.total_steps} decisions, {ppo.n_envs} envs x {ppo.n_steps} steps, "
          f"top-m {ppo.top_m}, same_seed_envs {ppo.same_seed_envs}; workload "
          f"{env_cfg['workload']}; net {num_parameters(ScorerNet(net_cfg))} parameters")

    def callback(row: dict[str, float]) -> None:
        logger.log_summary("train", row)
        if not progress:
            log.info("iter %d steps %d ret %.1f good %.1f late %.1f kl %.4f %.0f st/s",
                     row["iteration"], row["env_steps"], row["ep_return"], row["ep_good"],
                     row["ep_late"], row["approx_kl"], row["steps_per_s"])

    t0 = time.perf_counter()
    net, history, episodes = train_ppo(env_fns, ppo, net_cfg, init, callback, progress)
    train_s = time.perf_counter() - t0
    ckpt_dir = Path(str(agent["checkpoint_dir"]))
    train_info = {"env_steps": history[-1]["env_steps"] if history else 0,
                  "iterations": len(history), "episodes": len(episodes.returns),
                  "wall_s": round(train_s, 1), "ppo": ppo.to_dict(), "env": env_cfg}
    save_checkpoint(ckpt_dir, net, spec, ppo.top_m, policy=pkw, extra={"train": train_info})
    png = write_curve(history, episodes, out)
    print(f"trained {train_info['env_steps']} decisions in {train_s:.0f} s "
          f"({len(episodes.returns)} episodes); checkpoint: {ckpt_dir}")

    t1 = time.perf_counter()
    res = evaluate(agent, ckpt_dir, predictor, out, progress=False)
    res["eval_wall_s"] = round(time.perf_counter() - t1, 1)
    res["train"] = {**train_info, "checkpoint": str(ckpt_dir)}
    table = eval_table(res)
    print("\n" + table)
    (out / "eval.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "eval.md").write_text(f"# RL (PPO) vs AugServe\n\n{table}\n\nTraining: "
                                 f"{train_info['env_steps']} decisions, {train_s:.0f} s wall.\n")
    for name, s in res["settings"].items():
        logger.log_summary(f"eval/{name}", {k: v for k, v in s.items()
                                             if isinstance(v, int | float)})
    logger.log_images({"learning_curve": png})
    return res
