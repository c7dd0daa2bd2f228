"""Tune every policy the same way: token budget (and AugServe's own constants) by capacity.

For each profile (with the workload it is tuned on) and each policy, every setting is scored by
its **capacity**: the highest request rate at which at least ``--attainment`` (90%) of the
requests meet the SLO, found per development seed by a geometric bisection to ``--resolution``
(5%) relative, averaged over the seeds (0-4; the evaluation seeds, 1000-1019, are never used
here). Budgets: {256, 512, 1024, 2048, 4096, 8192}. AugServe is tuned first: its budget with
its constants at their defaults, then one coordinate pass over ``late_penalty``,
``starve_after_s``, ``starve_every_s`` and ``lookahead`` at its best budget. The SLO-aware
baselines then run with AugServe's chosen starvation tier, as their configs give it them.

A setting replaces the default only if its capacity beats the default's by more than the
resolution (a smaller gain is within the bisection's error); the chosen setting goes to
``data/tuned/<profile>.yaml``, which the policy configs read (``${tuned:...}``,
:mod:`augserve.tuned`), with the default's capacity, every grid point and the protocol it was
measured under beside it. Policies not named on the command line keep their measurements, and
the same rule is applied again to their budget grids (AugServe's constants are chosen only by a
run that tunes it; a kept SLO-aware row measured with another AugServe tier is warned about).

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
    "gptj_6b_a100": (["workload=infercept_json"], 150.0, 2.0),
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
#: policies whose configs take AugServe's starvation tier (conf/policy/*.yaml)
SHARES_AUGSERVE_TIER = ("vllm_slo", "infercept_slo", "edf", "hand_rule")
TIER_KEYS = ("starve_after_s", "starve_every_s")


def budget_overrides(policy: str, budget: int) -> dict[str, Any]:
    """The settings of ``policy`` at ``budget`` (AugServe: its dynamic rule starts there, its
    constants at their defaults, not at whatever the committed file holds)."""
    if policy == "augserve":
        return {"max_num_batched_tokens": budget, "b_base": budget,
                "b_max": max(budget, 4096), **AUGSERVE_DEFAULTS}
    return {"max_num_batched_tokens": budget}


def select(grid: dict[int, float], default: int, resolution: float) -> int:
    """The budget to run: the best of ``grid`` (capacity by budget) if it beats ``default``'s
    capacity by more than ``resolution`` (relative), else ``default``."""
    best = max(grid, key=lambda b: (grid[b], b == default))
    return best if grid[best] > grid[default] * (1.0 + resolution) else default


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
            if r > start * 64:  # the highest rate tried and met
                return lo
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
        return budget_overrides("augserve", 2048)
    return {"max_num_batched_tokens": 2048}


def _key(s: dict[str, Any]) -> tuple:
    return tuple(sorted(s.items()))


def tune_budgets(profile: str, policies: list[str], seeds: list[int], n_procs: int,
                 target: float, res: float, dur: float, extra: dict[str, Any]
                 ) -> dict[str, dict[str, Any]]:
    """Each policy's budget grid (with ``extra`` settings held fixed); the entry per policy."""
    _, _, start = PROFILES[profile]
    grids: dict[str, list[dict[str, Any]]] = {}
    for p in policies:
        fixed = extra if p in SHARES_AUGSERVE_TIER else {}
        grid = [{**budget_overrides(p, b), **fixed} for b in BUDGETS]
        d = {**default_settings(p, profile), **fixed}
        if d not in grid:
            grid.append(d)
        grids[p] = grid
    jobs = [(profile, p, _key(s), seed, dur, start, target, res)
            for p in policies for s in grids[p] for seed in seeds]
    caps = run_grid(jobs, n_procs)
    out: dict[str, dict[str, Any]] = {}
    for p in policies:
        scores = {int(s["max_num_batched_tokens"]):
                  mean_ci([caps[(p, _key(s), seed)] for seed in seeds]) for s in grids[p]}
        d = default_settings(p, profile)
        out[p] = {"default": d,
                  "grid": {b: round(m, 3) for b, (m, _) in scores.items()},
                  "grid_ci95": {b: round(h, 3) for b, (_, h) in scores.items()},
                  "_per_seed": {int(s["max_num_batched_tokens"]):
                                [caps[(p, _key(s), seed)] for seed in seeds] for s in grids[p]}}
    return out


def tune_augserve_constants(profile: str, entry: dict[str, Any], seeds: list[int],
                            n_procs: int, target: float, res: float, dur: float) -> None:
    """One coordinate pass over AugServe's constants at its chosen budget (``entry`` updated):
    a value replaces the current one only if it gains more than ``res``."""
    _, _, start = PROFILES[profile]
    cur = dict(entry["tuned"])
    cur_score, cur_ci = mean_ci(entry["_per_seed"][int(cur["max_num_batched_tokens"])])
    consts: dict[str, dict[str, float]] = {}
    for k, values in AUGSERVE_GRID.items():
        trial = [{**cur, k: v} for v in values if v != cur[k]]
        jobs = [(profile, "augserve", _key(s), seed, dur, start, target, res)
                for s in trial for seed in seeds]
        got = run_grid(jobs, n_procs)
        consts[k] = {str(cur[k]): round(cur_score, 3)}
        best, best_score, best_ci = None, cur_score * (1.0 + res), cur_ci
        for s in trial:
            sc, ci = mean_ci([got[("augserve", _key(s), seed)] for seed in seeds])
            consts[k][str(s[k])] = round(sc, 3)
            if sc > best_score:
                best, best_score, best_ci = s, sc, ci
        if best is not None:
            cur, cur_score, cur_ci = best, best_score, best_ci
    entry["tuned"] = cur
    entry["constants"] = consts
    entry["capacity_tuned"] = round(cur_score, 3)
    entry["capacity_tuned_ci95"] = round(cur_ci, 3)


def finish(entry: dict[str, Any], res: float) -> dict[str, Any]:
    """Apply the selection rule to an entry's grid (fresh or kept from the file)."""
    d = int(entry["default"]["max_num_batched_tokens"])
    grid = {int(b): float(v) for b, v in entry["grid"].items()}
    cis = {int(b): float(v) for b, v in (entry.get("grid_ci95") or {}).items()}
    b = select(grid, d, res)
    if "constants" not in entry:  # AugServe's tuned entry is set by its constants pass
        was = (entry.get("tuned") or {}).get("max_num_batched_tokens")
        entry["tuned"] = {**entry["default"], "max_num_batched_tokens": b}
        entry["capacity_tuned"] = round(grid[b], 3)
        if b in cis:
            entry["capacity_tuned_ci95"] = round(cis[b], 3)
        elif b != was:  # a kept entry's interval was measured for its previous choice
            entry.pop("capacity_tuned_ci95", None)
    entry["capacity_default"] = round(grid[d], 3)
    if d in cis:
        entry["capacity_default_ci95"] = round(cis[d], 3)
    entry.pop("_per_seed", None)
    return entry


def tune_profile(profile: str, policies: list[str], seeds: list[int], n_procs: int,
                 target: float, res: float, duration: float | None,
                 committed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    wl, dur, _ = PROFILES[profile]
    dur = duration or dur
    result: dict[str, Any] = {}
    if "augserve" in policies:
        result.update(tune_budgets(profile, ["augserve"], seeds, n_procs, target, res, dur, {}))
        e = result["augserve"]
        b = select(e["grid"], 2048, res)
        e["tuned"] = budget_overrides("augserve", b)
        e["default"] = budget_overrides("augserve", 2048)
        tune_augserve_constants(profile, e, seeds, n_procs, target, res, dur)
        tier = {k: e["tuned"][k] for k in TIER_KEYS}
    else:
        kept = committed.get("augserve", {})  # its tuned settings, as the configs read them
        tier = {k: kept.get(k, AUGSERVE_DEFAULTS[k]) for k in TIER_KEYS}
    rest = [p for p in policies if p != "augserve"]
    if rest:
        result.update(tune_budgets(profile, rest, seeds, n_procs, target, res, dur, tier))
    protocol = {"workload": wl, "duration_s": dur, "seeds": list(seeds), "attainment": target,
                "resolution": res, "budgets": list(BUDGETS)}
    for p, e in result.items():
        e["protocol"] = protocol
        if p in SHARES_AUGSERVE_TIER:
            e["augserve_tier"] = tier
    return {"meta": protocol, "policies": result}


def write(profile: str, got: dict[str, Any], out_dir: Path, res: float) -> Path:
    path = out_dir / f"{profile}.yaml"
    committed = TUNED_DIR / f"{profile}.yaml"
    src = path if path.is_file() else committed
    doc = (yaml.safe_load(src.read_text()) if src.is_file() else {}) or {}
    pols = doc.setdefault("policies", {})
    old_protocol = doc.pop("protocol", None)
    for e in pols.values():  # kept entries: the protocol they were measured under
        if old_protocol and "protocol" not in e:
            e["protocol"] = old_protocol
    pols.update(got["policies"])
    for e in pols.values():
        finish(e, float(e.get("protocol", {}).get("resolution", res)))
    tier = {k: (pols.get("augserve") or {}).get("tuned", {}).get(k, AUGSERVE_DEFAULTS[k])
            for k in TIER_KEYS}
    stale = [p for p in SHARES_AUGSERVE_TIER if p in pols and p not in got["policies"]
             and pols[p].get("augserve_tier", {k: AUGSERVE_DEFAULTS[k] for k in TIER_KEYS})
             != tier]
    if stale:  # their configs now run AugServe's tier, not the one they were measured with
        print(f"warning: {path}: {', '.join(stale)} were tuned with another AugServe tier than "
              f"{tier}; retune them (--policies {','.join(stale)})", file=sys.stderr)
    doc["profile"] = profile
    out_dir.mkdir(parents=True, exist_ok=True)
    head = ("# Written by `python experiments/tune.py` (docs/baselines.md); read by conf/policy/ "
            "through ${tuned:...}.\n# capacity: req/s at >= attainment of requests meeting the "
            "SLO, mean over the development seeds (ci95: 95% t-interval half-width).\n")
    path.write_text(head + yaml.safe_dump(doc, sort_keys=False, width=100))
    return path


def table(profiles: list[str], tuned_dir: Path) -> str:
    """Markdown: each policy's budget default -> tuned with capacities (req/s, ± 95% CI)."""
    docs = {p: yaml.safe_load((tuned_dir / f"{p}.yaml").read_text())["policies"]
            for p in profiles}
    names = list(dict.fromkeys(n for d in docs.values() for n in d))

    def cell(e: dict[str, Any] | None) -> str:
        if e is None:
            return "—"
        d, t = e["default"], e["tuned"]
        ci = e.get("capacity_tuned_ci95")
        tail = f" ± {ci:.2f}" if ci is not None and not math.isnan(ci) else ""
        dur = e.get("protocol", {}).get("duration_s")
        extra = [f"{k} {t[k]:g}" for k in AUGSERVE_DEFAULTS if k in t and t[k] != d.get(k)]
        if t == d:
            s = f"{d['max_num_batched_tokens']} ({e['capacity_default']:.2f}{tail})"
        else:
            moved = [f"{d['max_num_batched_tokens']} → {t['max_num_batched_tokens']}"] + extra
            s = (f"{', '.join(moved)} ({e['capacity_default']:.2f} → "
                 f"{e['capacity_tuned']:.2f}{tail})")
        tier = e.get("augserve_tier")
        if tier:
            s += f"; tier {tier['starve_after_s']:g} s / {tier['starve_every_s']:g} s"
        return s + (f" [{dur:.0f} s]" if dur else "")

    head = "| policy | " + " | ".join(profiles) + " |"
    rows = [head, "|---" * (len(profiles) + 1) + "|"]
    for n in names:
        rows.append(f"| {n} | " + " | ".join(cell(docs[p].get(n)) for p in profiles) + " |")
    return "\n".join(rows)


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
    ap.add_argument("--table", action="store_true",
                    help="print the tuned values of --out as a markdown table; run nothing")
    a = ap.parse_args()
    if a.table:
        print(table(a.profiles.split(","), Path(a.out)))
        return
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
        from augserve.tuned import load_tuned

        out_file = Path(a.out) / f"{profile}.yaml"
        committed = (load_tuned(profile, a.out) if out_file.is_file()  # what write() merges into
                     else load_tuned(profile))
        got = tune_profile(profile, pols, seeds, a.jobs, a.attainment, a.resolution, duration,
                           committed)
        print(f"wrote {write(profile, got, Path(a.out), a.resolution)}")


if __name__ == "__main__":
    main()
