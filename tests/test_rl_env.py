"""The gymnasium env of learned Stage II (rl/env.py): the contract of its module docstring."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rl
import rl.env as rl_env
import rl.policy as rl_policy
from augserve.engine.factory import make_sim_engine
from augserve.metrics import summarize
from augserve.request import AugRequest, Segment, ToolCall
from augserve.sched.augserve import AugServePolicy
from augserve.serving import prepare_requests
from augserve.workload.base import Workload
from predictors.features import FeatureInput
from rl.env import SchedulingEnv, make_default_env
from rl.obs import ITEM_FEATURES, OBS_HIGH, build_observation

SMALL = {"duration_s": 6.0, "k": 8}
OVERLOAD = {"rate": 60.0, "duration_s": 4.0, "k": 8}  # TTFT misses happen


class ListWorkload(Workload):
    """The same request list for every seed."""

    def __init__(self, reqs: list[AugRequest]) -> None:
        self.reqs = reqs

    def requests(self, seed: int) -> list[AugRequest]:
        return list(self.reqs)


def actions(env: SchedulingEnv, seed: int):
    rng = np.random.default_rng(seed)
    k, nb = env.obs_spec.k, len(env.obs_spec.budget_bins)
    while True:
        yield {"scores": rng.uniform(-10, 10, k).astype(np.float32),
               "budget": int(rng.integers(nb))}


def rollout(env: SchedulingEnv, seed: int, action_seed: int = 0, max_steps: int = 100_000):
    obs, _ = env.reset(seed=seed)
    trace, rewards = [obs], []
    for _, a in zip(range(max_steps), actions(env, action_seed), strict=False):
        obs, r, term, trunc, info = env.step(a)
        trace.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return trace, rewards, (term, trunc, info), env.result()


def same_records(ra, rb) -> bool:
    return len(ra) == len(rb) and all(
        a.rid == b.rid and a.finished == b.finished and a.finish_s == b.finish_s
        and np.array_equal(a.token_s, b.token_s) and a.kv_modes == b.kv_modes
        and a.preemptions == b.preemptions for a, b in zip(ra, rb, strict=True))


def same_obs(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def predictor():
    return make_default_env(**SMALL).predictor


# ------------------------------------------------------------------ registration, checker
def test_registered_and_overridable():
    assert rl.ENV_ID in gym.registry
    env = gym.make(rl.ENV_ID, rate=5.0, duration_s=3.0, k=4)
    obs, info = env.reset(seed=0)
    assert env.unwrapped.obs_spec.k == 4 and obs["items"].shape == (4, len(ITEM_FEATURES))
    assert env.observation_space.contains(obs)
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and isinstance(r, float)
    env.close()


def test_check_env():
    env = gym.make(rl.ENV_ID, **SMALL).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    # the one remaining recommendation: scores are ranks, their range is the documented [-10, 10]
    msgs = [str(w.message) for w in caught if "symmetric and normalized" not in str(w.message)]
    assert not msgs, msgs


def test_vector_env_steps():
    venv = gym.vector.SyncVectorEnv([lambda: make_default_env(**SMALL)] * 2)
    obs, _ = venv.reset(seed=[0, 1])
    assert obs["items"].shape == (2, SMALL["k"], len(ITEM_FEATURES))
    for _ in range(5):
        obs, r, term, trunc, _ = venv.step(venv.action_space.sample())
        assert r.shape == (2,) and obs["mask"].shape == (2, SMALL["k"])
    venv.close()


# ------------------------------------------------------------------ seeds
def test_seeded_determinism():
    a = rollout(make_default_env(**SMALL), seed=3)
    b = rollout(make_default_env(**SMALL), seed=3)
    assert len(a[0]) == len(b[0]) and all(same_obs(x, y) for x, y in zip(a[0], b[0], strict=True))
    assert a[1] == b[1] and a[2] == b[2]
    assert same_records(a[3].records, b[3].records)


def test_seed_draws_the_baseline_arrivals():
    env = make_default_env(**SMALL)
    env.reset(seed=5)
    seen = [r.req for r in env.run.reqs]
    assert seen == prepare_requests(env.workload, env.engine, 5)
    env.reset(seed=6)
    other = [r.req.arrival_s for r in env.run.reqs]
    assert other != [r.arrival_s for r in seen]
    env.reset(seed=5)
    assert [r.req for r in env.run.reqs] == seen


# ------------------------------------------------------------------ actions
def test_masked_slots_are_ignored():
    def run(noise_seed: int):
        env = make_default_env(**OVERLOAD)
        noise = np.random.default_rng(noise_seed)
        obs, _ = env.reset(seed=1)
        rewards, n_masked = [], 0
        for a in actions(env, 0):
            masked = obs["mask"] == 0
            n_masked += int(masked.sum())
            a["scores"][masked] = noise.uniform(-10, 10, int(masked.sum()))
            obs, r, term, trunc, _ = env.step(a)
            rewards.append(r)
            if term or trunc:
                return rewards, env.result(), n_masked

    (ra, res_a, n_masked), (rb, res_b, _) = run(1), run(2)
    assert n_masked > 100
    assert ra == rb and same_records(res_a.records, res_b.records)


def test_ranking_decides_admission_order(predictor):
    # one sequence slot: the first request admitted is the one the action ranks first
    reqs = [AugRequest(f"r{i}", 0.0, 100 * (i + 1), (Segment(4),), "qa", "what is it",
                       {"source": "infercept_mix"}) for i in range(3)]
    col = ITEM_FEATURES.index("prompt")
    firsts = set()
    for j in range(3):
        env = SchedulingEnv(make_sim_engine(max_num_seqs=1), ListWorkload(reqs), predictor, k=4)
        obs, _ = env.reset(seed=0)
        assert obs["mask"].tolist() == [1, 1, 1, 0]
        scores = np.zeros(4, np.float32)
        scores[j] = 5.0
        scores[3] = 9.0  # a masked slot: ignored
        env.step({"scores": scores, "budget": 2})
        while env.alive:
            env.step({"scores": np.zeros(4, np.float32), "budget": 2})
        recs = env.result().records
        first = min(recs, key=lambda r: r.token_s[0])
        assert first.prompt_tokens == round(np.expm1(float(obs["items"][j, col])))
        firsts.add(first.rid)
    assert len(firsts) == 3


@pytest.mark.parametrize("starve_after_s", [15.0, 2.0])  # 2 s: tier turns happen
def test_neutral_action_is_augserve(starve_after_s):
    """All-equal scores keep AugServe's order: with the 2048-token bin, the episode is AugServe's
    (static budget, same SLO re-keying and starvation tier) run on the same seed."""
    env = make_default_env(**OVERLOAD, policy_kwargs={"starve_after_s": starve_after_s})
    obs, _ = env.reset(seed=0)
    b = env.obs_spec.budget_bins.index(2048)
    promoted = 0
    while env.alive:
        promoted += int(obs["items"][:, ITEM_FEATURES.index("promoted")].sum())
        obs, *_ = env.step({"scores": np.zeros(env.obs_spec.k, np.float32), "budget": b})
    assert (promoted > 0) == (starve_after_s < 10)
    pol = AugServePolicy(env.predictor, dynamic_budget=False, slo="ttft:1000",
                         starve_after_s=starve_after_s)
    base = env.engine.run(prepare_requests(env.workload, env.engine, 0), pol)
    assert same_records(env.result().records, base.records)


# ------------------------------------------------------------------ reward and episode ends
def late_from_records(result, ttft_s: float) -> int:
    late = 0
    for r in result.records:
        if r.arrival_s > result.end_s:
            continue
        if r.token_s.shape[0]:
            late += not (r.token_s[0] - r.arrival_s <= ttft_s)
        else:
            late += result.end_s - r.arrival_s > ttft_s
    return late


@pytest.mark.parametrize("engine_kwargs", [None, {"max_time_s": 12.0}])
def test_reward_sums_to_good_minus_shaped_late(engine_kwargs):
    env = make_default_env(**OVERLOAD, shaping=0.25, engine_kwargs=engine_kwargs)
    _, rewards, (term, trunc, info), result = rollout(env, seed=2)
    assert (term, trunc) == ((True, False) if engine_kwargs is None else (False, True))
    good = summarize(result, "ttft:1000")["good_requests"]
    late = late_from_records(result, 1.0)
    assert late > 0 and info["good"] == good and info["late"] == late
    assert sum(rewards) == pytest.approx(good - 0.25 * late)
    if engine_kwargs is None:
        assert all(r.finished for r in result.records)
    else:
        assert not all(r.finished for r in result.records)


def test_termination_and_truncation():
    env = make_default_env(**SMALL, max_decisions=5)
    env.reset(seed=0)
    steps = [env.step(env.action_space.sample()) for _ in range(5)]
    assert [s[2:4] for s in steps] == [(False, False)] * 4 + [(False, True)]
    assert steps[-1][0]["mask"].any()  # the state at truncation, to bootstrap from
    env = make_default_env(**SMALL)
    trace, _, (term, trunc, _), result = rollout(env, seed=0)
    assert term and not trunc and all(r.finished for r in result.records)
    assert not any(v.any() for v in trace[-1].values())  # terminal observation: zeros
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(env.action_space.sample())


def test_close_ends_the_episode_and_a_reset_follows():
    env = make_default_env(**SMALL)
    first, _ = env.reset(seed=2)
    for _ in range(3):
        env.step(env.action_space.sample())
    env.close()
    assert env.run is None and env.policy is None
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(env.action_space.sample())
    with pytest.raises(RuntimeError, match="call reset"):
        env.result()
    env.close()  # twice is fine
    again, _ = env.reset(seed=2)
    assert same_obs(first, again)
    env.close()


def test_invalid_actions():
    env = make_default_env(**SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="budget bin"):
        env.step({"scores": np.zeros(8, np.float32), "budget": 7})
    with pytest.raises(ValueError, match="entries"):
        env.step({"scores": np.zeros(3, np.float32), "budget": 0})


# ------------------------------------------------------------------ no oracle
def test_scripts_never_reach_the_observation(predictor):
    def reqs(scale: int) -> list[AugRequest]:
        out = []
        for i in range(4):
            segs = (Segment(3 * scale, ToolCall("search", 0.5 * scale, 7 * scale)),
                    Segment(5 * scale))
            out.append(AugRequest(f"r{i}", 0.01 * i, 50 + i, segs, "qa", f"find item {i}",
                                  {"source": "infercept_mix"}))
        return out

    obs = []
    for scale in (1, 20):
        env = SchedulingEnv(make_sim_engine(), ListWorkload(reqs(scale)), predictor, k=8)
        o, _ = env.reset(seed=0)
        obs.append(o)
        assert env.policy.oracle is False
        with pytest.raises(PermissionError):
            _ = env.run.reqs[0].view.script
    assert same_obs(*obs)


# ------------------------------------------------------------------ fast path = plain path
class PlainPredictor:
    """The artifact's plain path on every call: feature rows rebuilt with build_matrix (prompt
    hashing included) and models run on them; nothing cached."""

    def __init__(self, base):
        self.base = base

    def predict(self, views):
        return self.base.predict_inputs([FeatureInput.from_view(v) for v in views], False)

    def predict_remaining(self, views):
        return self.base.predict_inputs([FeatureInput.from_view(v) for v in views], True)


def reference_observation(spec, cands, state, n_waiting, backlog, rate, last_budget, ttft_s=None):
    """The per-row builder the vectorized one replaced."""
    k = spec.k
    items = np.zeros((k, spec.f), dtype=np.float32)
    free, bs = max(state.free_blocks, 1), state.info.block_size
    for i, c in enumerate(cands[:k]):
        v = c.view
        ctx = v.context_tokens
        unc = max(ctx - v.computed_tokens, 0)
        pending, on_time, slack = v.generated_tokens == 0, False, 0.0
        if ttft_s is not None and pending:
            slack = v.arrival_s + ttft_s - state.now_s
            on_time = slack > 0
        items[i] = (np.log1p(max(c.value, 0.0)), np.log1p(max(c.pred_out, 0.0)),
                    max(c.pred_calls, 0.0), np.log1p(max(c.pred_tool_s, 0.0)),
                    np.log1p(v.generated_tokens), np.log1p(max(state.now_s - v.wait_since_s, 0.0)),
                    np.log1p(v.prompt_tokens), np.log1p(ctx), np.log1p(unc),
                    min(-(-unc // bs) / free, 4.0), float(v.calls_done > 0), float(v.preempted),
                    float(c.promoted), i / k, float(on_time),
                    np.log1p(slack) if on_time else 0.0, float(pending and not on_time))
    return np.minimum(items, OBS_HIGH)


def test_fast_path_keeps_decisions(monkeypatch):
    """Same actions, plain predictor and per-row observations: identical episode."""
    checked = []

    def checking_build(spec, cands, state, *a, **kw):
        obs = build_observation(spec, cands, state, *a, **kw)  # rows kept by the policy
        assert np.array_equal(obs["items"], reference_observation(spec, cands, state, *a))
        checked.append(obs["items"])
        return obs

    monkeypatch.setattr(rl_policy, "build_observation", checking_build)
    fast = rollout(make_default_env(**OVERLOAD), seed=7)
    assert checked
    seen = np.concatenate(checked)
    for name in ("ttft_pending", "ttft_slack_s", "ttft_late"):  # overload exercises all three
        assert seen[:, ITEM_FEATURES.index(name)].max() > 0, name

    class Plain(rl_env.ActionPolicy):
        """Plain predictions, and observation rows read off the views at every decision."""

        def __init__(self, pred, **kw):
            super().__init__(PlainPredictor(pred), **kw)

        adjust_key = AugServePolicy.adjust_key  # keeps no rows

    monkeypatch.setattr(rl_env, "ActionPolicy", Plain)
    plain = rollout(make_default_env(**OVERLOAD), seed=7)
    assert fast[1] == plain[1] and fast[2] == plain[2]
    assert all(same_obs(x, y) for x, y in zip(fast[0], plain[0], strict=True))
    assert same_records(fast[3].records, plain[3].records)
