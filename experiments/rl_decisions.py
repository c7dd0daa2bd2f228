"""What the shipped RL policy decides, against AugServe's order and a hand rule (not a test).

    python experiments/rl_decisions.py [--seeds 0,1] [--checkpoint data/rl/ppo]

Plays the training env (conf/agent/ppo.yaml: augmix 14 req/s, 150 s windows) with the
checkpoint's greedy decisions and, at every decision with more than one candidate, compares its
first pick with AugServe's head and with the hand rule "on-time requests still waiting for their
first token first, cheapest prefill first among them; late ones last". Prints the agreement
rates, and the hand rule's and AugServe's goodput on the same seeds.
"""

from __future__ import annotations

import argparse

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rl.obs import ITEM_FEATURES
from rl.rl_policy import RLPolicy
from rl.train_agent import make_env, policy_kwargs


def hand_rule(items: np.ndarray) -> np.ndarray:
    """Scores of the hand rule for one observation's ``items`` [K, F]."""
    pending = items[:, ITEM_FEATURES.index("ttft_pending")] > 0
    late = items[:, ITEM_FEATURES.index("ttft_late")] > 0
    k = items.shape[0]
    return (np.where(pending, 100.0, np.where(late, -100.0, 0.0))
            - items[:, ITEM_FEATURES.index("uncomputed")] - 1e-3 * np.arange(k))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--checkpoint", default="data/rl/ppo")
    ap.add_argument("--budget", type=int, default=2048, help="hand rule's budget (tokens)")
    a = ap.parse_args()
    agent = OmegaConf.to_container(OmegaConf.load("conf/agent/ppo.yaml"))
    pred = instantiate(agent["predictor"])
    env = make_env(agent["env"], pred, policy_kwargs(agent))
    rl = RLPolicy(a.checkpoint, pred)
    bins = list(env.unwrapped.obs_spec.budget_bins)
    n = head = rule = chances = took = 0
    good = {"rl": 0, "hand rule": 0, "augserve order": 0}
    for seed in (int(s) for s in a.seeds.split(",")):
        for who in good:
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                m = obs["mask"].astype(bool)
                if who == "rl":
                    scores, b = rl.decide(obs)
                    if m.sum() > 1:
                        s = np.where(m, scores, -np.inf)
                        top = int(np.argmax(s))
                        n += 1
                        head += top == 0
                        rule += top == int(np.argmax(np.where(m, hand_rule(obs["items"]),
                                                              -np.inf)))
                        pend = obs["items"][:, ITEM_FEATURES.index("ttft_pending")] > 0
                        if (pend & m).any():
                            chances += 1
                            took += bool(pend[top])
                elif who == "hand rule":
                    scores, b = hand_rule(obs["items"]), bins.index(a.budget)
                else:
                    scores, b = -np.arange(len(m), dtype=np.float64), bins.index(a.budget)
                obs, _, te, tr, info = env.step({"scores": scores.astype(np.float32),
                                                 "budget": b})
                done = te or tr
            good[who] += info["good"]
    print(f"decisions with > 1 candidate: {n}")
    print(f"first pick = AugServe's head: {head / n:.1%}; = hand rule's: {rule / n:.1%}")
    print(f"an on-time request without a first token picked when there is one: "
          f"{took / max(chances, 1):.1%} of {chances}")
    print("requests meeting the SLO: " + ", ".join(f"{k} {v}" for k, v in good.items())
          + f" (hand rule / augserve order = {good['hand rule'] / good['augserve order']:.3f})")


if __name__ == "__main__":
    main()
