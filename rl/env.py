"""``SchedulingEnv``: learned Stage II as a gymnasium environment over an augserve engine.

One env step = one scheduling decision: the engine runs until a step where a waiting request
could be admitted (waiting requests, free KV, a free sequence slot); the agent re-ranks the first
K candidates of AugServe's queue and picks the step's token budget; the engine executes that step
and runs on to the next decision. Steps with nothing to decide (decode-only stretches, a full
cache) are advanced without the agent.

**Observation** (``Dict``, float32 unless noted): ``items`` ``[K, F]`` per-candidate features
(:data:`rl.obs.ITEM_FEATURES`: AugServe value, predicted remaining tokens / calls / tool time,
tokens generated, waiting time, prompt and context length, tokens to recompute, KV need vs free,
resumed / preempted / promoted flags, AugServe rank), ``mask`` ``[K]`` (int8, 1 = a real
candidate) and ``engine`` ``[G]`` (:data:`rl.obs.ENGINE_FEATURES`: free and paused KV, running,
waiting, step time, backlog, arrival rate, last budget).

**Action** (``Dict``): ``scores`` ``[K]`` in [-10, 10] — candidates are tried in descending score
(masked slots are ignored; promoted requests stay first) — and ``budget``, an index into
``budget_bins`` (tokens per step).

**Reward**: +1 for each request that finishes meeting the SLO, minus ``shaping`` for each request
that crosses its TTFT SLO still without a first token. The shaping term moves the SLO signal to
the moment it is lost (a TTFT miss is decided then, not at the finish, possibly minutes later
after tool calls), which shortens credit assignment; its total over an episode is
``-shaping × (TTFT misses)``, so it only adds weight to the objective the +1 terms already carry.

**Episodes** are workload windows. ``reset(seed=s)`` draws the arrival sequence from ``s``: the
same seed gives the same arrivals, for the agent and every baseline policy. ``terminated`` when
every request has finished; ``truncated`` after ``max_decisions`` decisions (if set).
"""

from __future__ import annotations

import heapq
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from augserve.engine.base import Engine
from augserve.metrics import parse_slo
from augserve.predictor import Predictor
from augserve.serving import prepare_requests
from augserve.workload.base import Workload
from rl.obs import ObsSpec
from rl.policy import LearnedStage2


class ActionPolicy(LearnedStage2):
    """LearnedStage2 whose decisions are the env's actions."""

    name = "rl_env"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.action: tuple[np.ndarray, int] | None = None

    def decide(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
        raise RuntimeError("the env's policy only applies actions the env was given")

    def token_budget(self, state) -> int:
        # the env observed this step's candidates just before: apply its action to them
        if self.action is not None:
            self.apply(*self.action)
            self.action = None
        return self._budget


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
        self.predictor = predictor
        self.spec = ObsSpec(k=int(k), budget_bins=tuple(int(b) for b in budget_bins))
        self.slo = parse_slo(slo)
        self.shaping = float(shaping)
        self.max_decisions = max_decisions
        self.policy_kwargs = dict(policy_kwargs or {})
        k, f, g = self.spec.k, self.spec.f, self.spec.g
        self.observation_space = spaces.Dict({
            "items": spaces.Box(-np.inf, np.inf, (k, f), np.float32),
            "mask": spaces.MultiBinary(k),
            "engine": spaces.Box(-np.inf, np.inf, (g,), np.float32),
        })
        self.action_space = spaces.Dict({
            "scores": spaces.Box(-10.0, 10.0, (k,), np.float32),
            "budget": spaces.Discrete(len(self.spec.budget_bins)),
        })
        self.run = None

    # ------------------------------------------------------------------ helpers
    def _zeros(self) -> dict[str, np.ndarray]:
        k, f, g = self.spec.k, self.spec.f, self.spec.g
        return {"items": np.zeros((k, f), np.float32), "mask": np.zeros(k, np.int8),
                "engine": np.zeros(g, np.float32)}

    def _meets(self, r) -> bool:
        """Does finished request ``r`` meet the SLO? (Live engine state: records get their
        token arrays only at the end of a run.) Same definitions as augserve.metrics."""
        rec, n = r.rec, r.gen
        if not rec.finished or n == 0:
            return False
        first = r.chunks[0] if isinstance(r.chunks[0], float) else self.run.clock[r.chunks[0][0]]
        ttft = (first - rec.arrival_s) * 1e3
        e2el = (rec.finish_s - rec.arrival_s) * 1e3
        tpot = (e2el - ttft) / (n - 1) if n > 1 else 0.0
        tool = rec.tool_time_s * 1e3
        vals = {"ttft": ttft, "tpot": tpot, "e2el": e2el, "e2el_no_tool": e2el - tool,
                "norm": (e2el - tool) / n}
        return all(vals[key] <= lim for key, lim in self.slo.items())

    def _reward(self) -> float:
        run = self.run
        good = sum(self._meets(r) for r in run.done_log)
        run.done_log.clear()
        late = 0
        ttft = self.slo.get("ttft")
        if ttft is not None:
            while self._seen < run.next_arrival:  # new arrivals: their TTFT deadlines
                r = run.reqs[self._seen]
                heapq.heappush(self._deadlines, (r.req.arrival_s + ttft / 1e3, self._seen))
                self._seen += 1
            while self._deadlines and self._deadlines[0][0] <= run.now:
                _, i = heapq.heappop(self._deadlines)
                if run.reqs[i].gen == 0:
                    late += 1
        self._late += late
        self._good += good
        return float(good - self.shaping * late)

    def _obs(self) -> dict[str, np.ndarray]:
        return self.policy.observe(self.run.state())

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        s = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        requests = prepare_requests(self.workload, self.engine, s)
        self.policy = ActionPolicy(self.predictor, k=self.spec.k,
                                   budget_bins=self.spec.budget_bins, **self.policy_kwargs)
        self.run = self.engine.start(requests, self.policy)
        self._deadlines: list[tuple[float, int]] = []
        self._seen = 0
        self._late = 0
        self._good = 0
        self.decisions = 0
        self.alive = self.run.advance()
        self._reward()  # deadlines and finishes before the first decision belong to no action
        obs = self._obs() if self.alive else self._zeros()
        return obs, {"requests": len(requests), "seed": s}

    def step(self, action: dict[str, Any]):
        if self.run is None:
            raise RuntimeError("call reset() before step()")
        if not self.alive:
            raise RuntimeError("the episode is over: call reset()")
        scores = np.asarray(action["scores"], dtype=np.float64)
        self.policy.action = (scores, int(action["budget"]))
        self.run.step()
        self.decisions += 1
        self.alive = self.run.advance()
        reward = self._reward()
        terminated = not self.alive
        truncated = (not terminated and self.max_decisions is not None
                     and self.decisions >= self.max_decisions)
        obs = self._obs() if self.alive else self._zeros()
        info = {"decisions": self.decisions, "good": self._good, "late": self._late,
                "now_s": self.run.now}
        return obs, reward, terminated, truncated, info

    def result(self):
        """The engine's RunResult for the episode so far (records of every request)."""
        return self.run.finish()
