"""``SchedulingEnv``: learned Stage II as a gymnasium environment over an augserve engine.

One env step = one scheduling decision: the engine runs until a step where a waiting request
could be admitted (waiting requests, free KV, a free sequence slot); the agent re-ranks the first
K candidates of AugServe's queue and picks the step's token budget; the engine executes that step
and runs on to the next decision. Steps with nothing to decide (decode-only stretches, a full
cache) are advanced without the agent.

**Observation** (``Dict``, float32 in [0, :data:`rl.obs.OBS_HIGH`] unless noted): ``items``
``[K, F]`` per-candidate features (:data:`rl.obs.ITEM_FEATURES`: AugServe value, predicted
remaining tokens / calls / tool time, tokens generated, waiting time, prompt and context length,
tokens to recompute, KV need vs free, resumed / preempted / promoted flags, AugServe rank, and
the TTFT SLO's state: first token still pending and on time, seconds left, already late),
``mask`` ``[K]`` (int8, 1 = a real candidate) and ``engine`` ``[G]``
(:data:`rl.obs.ENGINE_FEATURES`: free and paused KV, running, waiting, step time, backlog,
arrival rate, last budget). Only what a policy may see: request views and predictions, never the
request scripts.

**Action** (``Dict``): ``scores`` ``[K]`` (float32; the space samples [-10, 10], any finite
values work) — candidates are tried in descending score (ties: AugServe's order; masked slots
are ignored; the starvation tier's head on a tier turn stays first) — and ``budget``, an index
into ``budget_bins`` (tokens per step).

**Reward**: +1 for each request that finishes meeting the SLO (the definitions of
:func:`augserve.metrics.summarize`), minus ``shaping`` for each request whose TTFT misses the SLO,
given at the first step where that is certain (its deadline passed without a first token, or its
first token came late). The shaping term moves the SLO signal to the moment it is lost (a TTFT
miss is decided then, not at the finish, possibly minutes later after tool calls), which
shortens credit assignment. Over an episode the rewards sum to ``good - shaping × late``
(``info["good"]``, ``info["late"]``); events before the first decision count in the first step.

**Episodes** are workload windows. ``reset(seed=s)`` draws the arrival sequence from ``s``
(:func:`augserve.serving.prepare_requests`): the same seed gives the same arrivals, for the agent
and every baseline policy. ``terminated`` when every request has finished; ``truncated`` after
``max_decisions`` decisions (if set) or when the engine's clock reaches its ``max_time_s``
with requests unfinished (those never count as good). The observation returned with
``terminated`` is all zeros; with ``truncated`` it is the state at that point.

``make_default_env`` (gymnasium id ``augserve/Scheduling-v0``): SimEngine on llama3_8b_a100,
augmix at 14 req/s for 120 s, the shipped LightGBM predictor, K = 64.
"""

from __future__ import annotations

import functools
import heapq
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from augserve.engine.base import Engine, Run
from augserve.engine.player import Scripted
from augserve.predictor import Predictor
from augserve.serving import prepare_requests
from augserve.slo import parse_slo, record_meets
from augserve.workload.base import Workload
from rl.obs import OBS_HIGH, ObsSpec
from rl.policy import LearnedStage2

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREDICTOR = "data/predictors/lgbm"


class ActionPolicy(LearnedStage2):
    """LearnedStage2 whose decisions are the env's actions."""

    name = "rl_env"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.action: tuple[np.ndarray, int] | None = None

    def decide(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        raise RuntimeError("the env's policy only applies actions the env was given")

    def on_step(self, state) -> None:
        # the env observed this step's candidates just before: apply its action to them
        if self.action is not None:
            self.apply(*self.action)
            self.action = None


class SchedulingEnv(gym.Env):
    """See the module docstring for the contract."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        engine: Engine,
        workload: Workload,
        predictor: Predictor,
        k: int = 64,
        budget_bins: tuple[int, ...] | list[int] = (256, 512, 1024, 2048, 4096),
        slo: str | dict = "ttft:1000",
        shaping: float = 0.1,
        max_decisions: int | None = None,
        policy_kwargs: dict | None = None,
    ) -> None:
        if not hasattr(engine, "start"):
            raise TypeError(f"{type(engine).__name__} cannot be stepped (no start())")
        self.engine = engine
        self.workload = workload
        self.predictor = predictor  # shared by the episodes' policies (each resets its cache)
        self.obs_spec = ObsSpec(k=int(k), budget_bins=tuple(int(b) for b in budget_bins))
        self.slo = parse_slo(slo)
        self.shaping = float(shaping)
        if max_decisions is not None and max_decisions < 1:
            raise ValueError(f"max_decisions={max_decisions} must be >= 1 (or None)")
        self.max_decisions = max_decisions
        self.policy_kwargs = dict(policy_kwargs or {})
        self.policy_kwargs.setdefault("slo", dict(self.slo))  # AugServe's TTFT re-keying
        k, f, g = self.obs_spec.k, self.obs_spec.f, self.obs_spec.g
        self.observation_space = spaces.Dict({
            "items": spaces.Box(0.0, OBS_HIGH, (k, f), np.float32),
            "mask": spaces.MultiBinary(k),
            "engine": spaces.Box(0.0, OBS_HIGH, (g,), np.float32),
        })
        self.action_space = spaces.Dict({
            "scores": spaces.Box(-10.0, 10.0, (k,), np.float32),
            "budget": spaces.Discrete(len(self.obs_spec.budget_bins)),
        })
        self.run: Run | None = None  # the episode's engine run (Engine.start)
        self._finished = True
        self.policy: ActionPolicy | None = None

    # ------------------------------------------------------------------ helpers
    def _zeros(self) -> dict[str, np.ndarray]:
        k, f, g = self.obs_spec.k, self.obs_spec.f, self.obs_spec.g
        return {"items": np.zeros((k, f), np.float32), "mask": np.zeros(k, np.int8),
                "engine": np.zeros(g, np.float32)}

    def _meets(self, r: Scripted) -> bool:
        """Does finished request ``r`` meet the SLO? Judged from its record's per-turn fields
        (token arrays come only at the end of a run), as the metrics judge it."""
        return record_meets(r.rec, self.slo)

    def _late_sweep(self, final: bool) -> int:
        """TTFT misses that became certain: deadline passed without a first token, or a late
        first token. ``final``: also look at deadlines not reached yet (end of the episode)."""
        run, lim = self.run, self._ttft_s
        player = run.player
        while self._seen < player.next_arrival:  # new arrivals: their TTFT deadlines
            r = player.reqs[self._seen]
            heapq.heappush(self._deadlines, (r.req.arrival_s + lim, self._seen))
            self._seen += 1
        late = 0
        undecided = []
        dl = self._deadlines
        while dl and (final or dl[0][0] <= run.now):
            item = heapq.heappop(dl)
            r = player.reqs[item[1]]
            first = r.first_token_s()
            if first is not None:
                late += not (first - r.req.arrival_s <= lim)
            elif run.now - r.req.arrival_s > lim:  # its first token can only come later
                late += 1
            else:  # not certain yet (a deadline ahead, or equal to now up to rounding)
                undecided.append(item)
        for item in undecided:
            heapq.heappush(dl, item)
        return late

    def _reward(self, final: bool = False) -> float:
        run = self.run
        good = sum(self._meets(r) for r in run.player.drain_finished())
        late = self._late_sweep(final) if self._ttft_s is not None else 0
        self._late += late
        self._good += good
        return float(good - self.shaping * late)

    def _obs(self) -> dict[str, np.ndarray]:
        return self.policy.observe(self.run.state())

    def _all_finished(self) -> bool:
        return self.run.player.all_finished()

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.run is not None and not self._finished:  # an episode cut short: release it
            self._finished = True
            self.run.finish()
        s = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        requests = prepare_requests(self.workload, self.engine, s)
        if not requests:
            raise ValueError(f"the workload has no request for seed {s}: nothing to decide")
        self.policy = ActionPolicy(self.predictor, k=self.obs_spec.k,
                                   budget_bins=self.obs_spec.budget_bins, **self.policy_kwargs)
        self.run = self.engine.start(requests, self.policy)
        self._finished = False
        ttft = self.slo.get("ttft")
        self._ttft_s = ttft / 1000.0 if ttft is not None else None
        self._deadlines: list[tuple[float, int]] = []
        self._seen = 0
        self._late = 0
        self._good = 0
        self.decisions = 0
        self.alive = self.run.advance()
        if not self.alive:
            raise RuntimeError(f"seed {s}: the run ended before any decision")
        # events before the first decision belong to no action: they count in the first step
        self._carry = self._reward()
        return self._obs(), {"requests": len(requests), "seed": s}

    def step(self, action: dict[str, Any]):
        if self.run is None:
            raise RuntimeError("call reset() before step()")
        if not self.alive:
            raise RuntimeError("the episode is over: call reset()")
        scores = np.asarray(action["scores"], dtype=np.float64).reshape(-1)
        budget = int(np.asarray(action["budget"]).reshape(()))
        self.policy.apply(scores, budget)  # validates; the step applies it again
        self.policy.action = (scores, budget)
        self.run.step()
        self.decisions += 1
        self.alive = self.run.advance()
        terminated = not self.alive and self._all_finished()
        truncated = not terminated and (not self.alive or (
            self.max_decisions is not None and self.decisions >= self.max_decisions))
        reward = self._reward(final=terminated or truncated) + self._carry
        self._carry = 0.0
        obs = self._zeros() if terminated else self._obs()
        info = {"decisions": self.decisions, "good": self._good, "late": self._late,
                "now_s": self.run.now}
        return obs, reward, terminated, truncated, info

    def result(self):
        """The engine's RunResult (records of every request, unfinished ones as far as they
        got). This ends the episode: the engine's run cannot go on after it."""
        if self.run is None:
            raise RuntimeError("no episode: call reset() first")
        self.alive = False
        self._finished = True
        return self.run.finish()

    def close(self) -> None:
        """End the episode in progress, if any, and release what its run holds (a live
        engine aborts the run's requests and detaches the policy). ``reset()`` may follow."""
        if self.run is not None and not self._finished:  # stopped or not, it holds requests
            self.alive = False
            self._finished = True
            self.run.finish()
        self.run = None
        self.policy = None
        super().close()


@functools.lru_cache(maxsize=4)
def _load_predictor(path: str) -> Predictor:
    from predictors.artifact import load_predictor

    return load_predictor(path)


def make_default_env(
    rate: float = 14.0,
    duration_s: float = 120.0,
    k: int = 64,
    predictor: str | Predictor = DEFAULT_PREDICTOR,
    profile: str = "llama3_8b_a100",
    slo: str | dict = "ttft:1000",
    shaping: float = 0.1,
    max_decisions: int | None = None,
    budget_bins: tuple[int, ...] | list[int] = (256, 512, 1024, 2048, 4096),
    engine_kwargs: dict | None = None,
    workload_kwargs: dict | None = None,
    policy_kwargs: dict | None = None,
) -> SchedulingEnv:
    """The default env (``augserve/Scheduling-v0``): SimEngine on ``profile``, the built-in augmix
    workload at ``rate`` req/s for ``duration_s`` s, the predictor artifact at ``predictor``
    (relative paths from the repository root), K = ``k``. ``engine_kwargs`` go to
    :func:`augserve.engine.factory.make_sim_engine` (e.g. ``max_time_s``), ``workload_kwargs``
    to :func:`augserve.workload.make_augmix`, ``policy_kwargs`` to AugServe."""
    from augserve.engine.factory import make_sim_engine
    from augserve.workload import make_augmix

    if isinstance(predictor, str | Path):
        p = Path(predictor)
        predictor = _load_predictor(str(p if p.is_absolute() else ROOT / p))
    engine = make_sim_engine(profile=profile, **(engine_kwargs or {}))
    workload = make_augmix(rate=rate, duration_s=duration_s, **(workload_kwargs or {}))
    return SchedulingEnv(engine, workload, predictor, k=k, budget_bins=budget_bins, slo=slo,
                         shaping=shaping, max_decisions=max_decisions,
                         policy_kwargs=policy_kwargs)
