"""Tune every policy the same way: token budget (and AugServe's own constants) by capacity.

For each profile (with the workload it is tuned on) and each policy, every setting is scored by
its **capacity**: the highest request rate at which at least ``--attainment`` (90%) of the
requests meet the SLO, found per development seed by a geometric bisection to ``--resolution``
(5%) relative, averaged over the seeds (0-4; the evaluation seeds, 1000-1019, are never used
here). Budgets: {256, 512, 1024, 2048, 4096, 8192}. AugServe then gets one coordinate pass over
``late_penalty``, ``starve_after_s``, ``starve_every_s`` and ``lookahead`` at its best budget.
The best setting (the default where the default ties it) goes to ``data/tuned/<profile>.yaml``,
which the policy configs read (``${tuned:...}``, :mod:`augserve.tuned`); the default's
capacity and every grid point are kept beside it. Policies not named on the command line keep
what the file has.

    python experiments/tune.py                               # every profile and policy
    python experiments/tune.py --profiles llama3_8b_a100 --policies vllm,augserve
    python experiments/tune.py --quick --out /tmp/tuned      # a small smoke run (2 seeds)

Runs in parallel over (policy, setting, seed) with ``--jobs`` processes (default: all cores).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augserve.tuned import TUNED_DIR  # noqa: E402

BUDGETS = (256, 512, 1024, 2048, 4096, 8192)
DEV_SEEDS = (0, 1, 2, 3, 4)
#: profile -> (workload overrides it is tuned on, arrival window s, first rate tried req/s)
PROFILES: dict[str, tuple[list[str], float, float]] = {
    "llama3_8b_a100": (["workload=augmix"], 150.0, 8.0),
    "gptj_6b_a100": (["workload=infercept_json"], 300.0, 2.0),
}
#: policies whose budget is tuned, and the default each config falls back to
POLICIES = ("vllm", "infercept", "vllm_slo", "infercept_slo", "edf", "hand_rule", "continuum",
            "continuum_dynamic", "autellix", "lamps", "ltr", "augserve", "oracle")
#: AugServe's own constants: the values tried (one coordinate pass, in this order)
AUGSERVE_GRID: dict[str, tuple[Any, ...]] = {
    "late_penalty": (0.0, 1.0e6),
    "starve_after_s": (5.0, 15.0, 60.0),
    "starve_every_s": (0.25, 1.0, 4.0),
    "lookahead": (0, 8, 32),
}
AUGSERVE_DEFAULTS = {"late_penalty": 1.0e6, "starve_after_s": 15.0, "starve_every_s": 1.0,
                     "lookahead": 8}


def budget_overrides(policy: str, budget: int) -> dict[str, Any]:
    """The settings of ``policy`` at ``budget`` (AugServe: its dynamic rule starts there)."""
    if policy == "augserve":
        return {"max_num_batched_tokens": budget, "b_base": budget,
                "b_max": max(budget, 4096)}
    return {"max_num_batched_tokens": budget}


def _hydra_overrides(policy: str, settings: dict[str, Any]) -> list[str]:
    out = []
    for k, v in settings.items():
        key = f"budget.{k}" if k in ("b_base", "b_max") else k
        out.append(f"policies.{policy}.{key}={v}")
    return out


_CACHE: dict[tuple, Any] = {}


def _setup(profile: str, policy: str, settings: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(engine, workload config, policy config) for one job (cached per process)."""
    from hydra import compose, initialize_config_dir

    from augserve.serving import split_policy_config

    key = (profile, policy, tuple(sorted(settings.items())))
    if key not in _CACHE:
        from hydra.utils import instantiate

        wl, _, _ = PROFILES[profile]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("serve", [f"policy=[{policy}]", f"engine.profile={profile}", *wl,
                                    *_hydra_overrides(policy, settings)])
        eng_key = ("engine", profile)
        if eng_key not in _CACHE:
            _CACHE[eng_key] = instantiate(cfg.engine)
        pcfg = split_policy_config(cfg.policies[policy])[0]
        _CACHE[key] = (_CACHE[eng_key], cfg.workload, pcfg, cfg.slo.spec)
    return _CACHE[key]


def attainment(profile: str, policy: str, settings: dict[str, Any], seed: int, rate: float,
               duration_s: float) -> float:
    """SLO attainment of one run (fraction of all requests)."""
    from hydra.utils import instantiate

    from augserve.metrics import summarize
    from augserve.serving import prepare_requests

    engine, wcfg, pcfg, slo = _setup(profile, policy, settings)
    workload = instantiate(wcfg, rate=rate, duration_s=duration_s)
    requests = prepare_requests(workload, engine, seed)
    pol = instantiate(pcfg)
    result = engine.run(requests, pol, progress=False)
    return float(summarize(result, slo, duration_s=duration_s)["slo_attainment"])


def capacity(profile: str, policy: str, settings: dict[str, Any], seed: int, duration_s: float,
             start: float, target: float, resolution: float) -> float:
    """Highest rate (req/s) with attainment >= ``target``, geometric bisection; 0 if even
    ``start / 64`` fails."""
    ok = lambda r: attainment(profile, policy, settings, seed, r, duration_s) >= target  # noqa: E731
    lo, hi = None, None
    r = start
    if ok(r):
        lo = r
        while hi is None:
            r *= 1.5
            if r > start * 64:
                return r
            if ok(r):
                lo = r
            else:
                hi = r
    else:
        hi = r
        while lo is None:
            r /= 1.5
            if r < start / 64:
                return 0.0
            if ok(r):
                lo = r
            else:
                hi = r
    while hi / lo > 1.0 + resolution:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _job(args: tuple) -> tuple[tuple, float]:
    profile, policy, settings, seed, duration_s, start, target, res = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    c = capacity(profile, policy, dict(settings), seed, duration_s, start, target, res)
    return (policy, tuple(settings), seed), c


def run_grid(jobs: list[tuple], n_procs: int) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    t0 = time.time()
    with ProcessPoolExecutor(n_procs) as ex:
        futs = [ex.submit(_job, j) for j in jobs]
        for i, f in enumerate(as_completed(futs), 1):
            k, c = f.result()
            out[k] = c
            print(f"[{i}/{len(jobs)} {time.time() - t0:6.0f} s] {k[0]} {dict(k[1])} seed {k[2]}:"
                  f" {c:.2f} req/s", flush=True)
    return out


def mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and 95% t-interval half-width."""
    from scipy import stats

    a = np.asarray(xs, dtype=float)
    if len(a) < 2:
        return float(a.mean()), float("nan")
    return float(a.mean()), float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1)
                                  / math.sqrt(len(a)))


def default_settings(policy: str, profile: str) -> dict[str, Any]:
    """What the config uses without tuning (``${tuned:...,<default>}``'s default)."""
    from augserve.engine.cost import load_profile, saturation_tokens

    if policy in ("infercept", "infercept_slo"):
        return {"max_num_batched_tokens": saturation_tokens(load_profile(profile))}
    if policy == "augserve":
        return {"max_num_batched_tokens": 2048, "b_base": 2048, "b_max": 4096}
    return {"max_num_batched_tokens": 2048}


def tune_profile(profile: str, policies: list[str], seeds: list[int], n_procs: int,
                 target: float, res: float, duration: float | None) -> dict[str, Any]:
    wl, dur, start = PROFILES[profile]
    dur = duration or dur
    settings: dict[str, list[dict[str, Any]]] = {}
    for p in policies:
        grid = [budget_overrides(p, b) for b in BUDGETS]
        d = default_settings(p, profile)
        if d not in grid:
            grid.append(d)
        settings[p] = grid
    jobs = [(profile, p, tuple(sorted(s.items())), seed, dur, start, target, res)
            for p in policies for s in settings[p] for seed in seeds]
    caps = run_grid(jobs, n_procs)

    def score(p: str, s: dict[str, Any]) -> tuple[float, float]:
        return mean_ci([caps[(p, tuple(sorted(s.items())), seed)] for seed in seeds])

    result: dict[str, Any] = {}
    for p in policies:
        d = default_settings(p, profile)
        best = max(settings[p], key=lambda s: (score(p, s)[0], s == d))
        if score(p, best)[0] <= score(p, d)[0]:
            best = d
        result[p] = {"default": d, "tuned": dict(best),
                     "grid": {int(s["max_num_batched_tokens"]): round(score(p, s)[0], 3)
                              for s in settings[p]}}
    if "augserve" in policies:  # its own constants, one coordinate pass at its best budget
        cur = {**result["augserve"]["tuned"], **AUGSERVE_DEFAULTS}
        base_caps = [caps[("augserve", tuple(sorted(result["augserve"]["tuned"].items())), s)]
                     for s in seeds]
        cur_score = mean_ci(base_caps)[0]
        consts: dict[str, dict[str, float]] = {}
        for k, values in AUGSERVE_GRID.items():
            trial = [{**cur, k: v} for v in values if v != cur[k]]
            jobs = [(profile, "augserve", tuple(sorted(s.items())), seed, dur, start, target,
                     res) for s in trial for seed in seeds]
            got = run_grid(jobs, n_procs)
            consts[k] = {str(cur[k]): round(cur_score, 3)}
            for s in trial:
                sc = mean_ci([got[("augserve", tuple(sorted(s.items())), seed)]
                              for seed in seeds])[0]
                consts[k][str(s[k])] = round(sc, 3)
                if sc > cur_score:
                    cur, cur_score = s, sc
        result["augserve"]["tuned"] = cur
        result["augserve"]["default"] = {**result["augserve"]["default"], **AUGSERVE_DEFAULTS}
        result["augserve"]["constants"] = consts
        result["augserve"]["_cap_tuned"] = cur_score
    for p in policies:
        r = result[p]
        if p != "augserve":
            r["capacity_default"] = round(score(p, r["default"])[0], 3)
            m, h = score(p, r["tuned"])
        else:
            r["capacity_default"] = r["grid"].get(2048)
            m, h = r.pop("_cap_tuned"), float("nan")
        r["capacity_tuned"] = round(m, 3)
        if not math.isnan(h):
            r["capacity_tuned_ci95"] = round(h, 3)
    meta = {"workload": wl, "duration_s": dur, "seeds": list(seeds), "attainment": target,
            "resolution": res, "budgets": list(BUDGETS)}
    return {"meta": meta, "policies": result}


def write(profile: str, got: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / f"{profile}.yaml"
    doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
    doc = doc or {}
    doc.setdefault("policies", {}).update(got["policies"])
    doc["profile"] = profile
    doc.setdefault("protocol", {}).update(got["meta"])
    out_dir.mkdir(parents=True, exist_ok=True)
    head = ("# Written by `python experiments/tune.py` (docs/baselines.md); read by conf/policy/ "
            "through ${tuned:...}.\n# capacity: req/s at >= attainment of requests meeting the "
            "SLO, mean over the development seeds.\n")
    path.write_text(head + yaml.safe_dump(doc, sort_keys=False, width=100))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--seeds", default=",".join(map(str, DEV_SEEDS)))
    ap.add_argument("--attainment", type=float, default=0.9)
    ap.add_argument("--resolution", type=float, default=0.05)
    ap.add_argument("--duration", type=float, default=None, help="arrival window (s)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="seeds 0,1; 60 s windows")
    ap.add_argument("--out", default=str(TUNED_DIR))
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if any(s >= 1000 for s in seeds):
        ap.error("seeds >= 1000 are evaluation seeds; never tune on them")
    duration = a.duration
    if a.quick:
        seeds, duration = seeds[:2], duration or 60.0
    for profile in a.profiles.split(","):
        if profile not in PROFILES:
            ap.error(f"--profiles: {profile!r} has no tuning workload; known: "
                     f"{', '.join(PROFILES)}")
        pols = [p for p in a.policies.split(",") if p]
        unknown = [p for p in pols if p not in POLICIES]
        if unknown:
            ap.error(f"--policies: {unknown[0]!r} is not tuned here; known: {', '.join(POLICIES)}")
        got = tune_profile(profile, pols, seeds, a.jobs, a.attainment, a.resolution, duration)
        print(f"wrote {write(profile, got, Path(a.out))}")


if __name__ == "__main__":
    main()
