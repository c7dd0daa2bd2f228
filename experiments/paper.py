"""The paper's comparison in one command: effective throughput vs request rate.

For each study (a workload of the benchmark suite, ``experiments/conf/suite.yaml``), runs
``serve.py -m`` with ``experiments/conf/paper.yaml`` (Hydra multirun, joblib launcher, every
policy on the same seeded arrivals per rate), then collects every job's ``summary.csv`` into
``experiments/results/paper.csv``, ``paper.md`` (tables, capacities, stress-point ratios) and PNG
figures (goodput vs rate, SLO attainment vs rate, TTFT CDF at the stress point).

    python experiments/paper.py                 # all studies (tens of minutes on 2 cores)
    python experiments/paper.py --studies augmix --quick   # a small smoke run
    python experiments/paper.py --report-only   # tables and figures again from multirun/paper/
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from augserve.report import plot_goodput_vs_rate, plot_ttft_cdf
from augserve.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ["vllm", "vllm_nocache", "infercept", "infercept_vllm_budget", "vllm_slo",
            "infercept_slo", "edf", "hand_rule", "continuum", "continuum_dynamic", "autellix",
            "lamps", "ltr", "augserve_stage1", "augserve_no_budget", "augserve", "rl_ckpt",
            "oracle"]


@dataclass
class Study:
    name: str
    overrides: list[str]
    rates: list[float]
    sweep: bool = True  # a rate sweep (False: one-rate variant)
    notes: str = ""
    extra: dict = field(default_factory=dict)


def studies(data_dir: str, suite_path: str | Path | None = None) -> list[Study]:
    """The suite's workloads (``experiments/conf/suite.yaml``, :mod:`augserve.suite`) as
    studies, in the suite's order."""
    suite = load_suite(suite_path) if suite_path is not None else load_suite()
    return [Study(w.name, w.serve_overrides(data_dir), list(w.rates), notes=w.notes)
            for w in suite.workloads.values()]


QUICK_S = 120.0  # arrival window of --quick runs (s)


def sweep_root(quick: bool) -> Path:
    """Where a study's jobs go: quick runs apart, so they never mix with the full run's."""
    return ROOT / "multirun" / ("paper_quick" if quick else "paper")


def output_dir(quick: bool) -> Path:
    """Where the tables and figures go by default: quick runs never touch the committed ones."""
    return ROOT / "multirun" / "paper_quick" / "report" if quick else ROOT / "experiments" / \
        "results"


def study_duration(st: Study, quick: bool) -> float | None:
    """The arrival window (s) a study's jobs use, as set by its overrides (None: the default)."""
    if quick:
        return QUICK_S
    for o in st.overrides:
        if o.startswith("workload.duration_s="):
            return float(o.split("=", 1)[1])
    return None


def run_study(st: Study, seed: int, data_dir: str, quick: bool,
              root: Path | None = None,
              extra_overrides: tuple[str, ...] = ()) -> list[dict]:
    """Run one study as a Hydra multirun under ``root/<name>`` (replacing an earlier run
    there); its summary rows."""
    rates = st.rates[:3] if quick else st.rates
    extra = [f"workload.duration_s={QUICK_S:g}"] if quick else []
    sweep_dir = Path(root or sweep_root(quick)) / st.name
    if sweep_dir.is_dir():  # leftovers of an earlier, other grid would mix into the tables
        shutil.rmtree(sweep_dir)
    cmd = [sys.executable, str(ROOT / "serve.py"), "--config-dir", str(ROOT / "experiments" /
           "conf"), "--config-name", "paper", "-m", *st.overrides, *extra,
           f"workload.rate={','.join(str(r) for r in rates)}", f"seed={seed}",
           f"data_dir={data_dir}", f"study={st.name}", f"hydra.sweep.dir={sweep_dir}",
           *extra_overrides]
    print(f"[{st.name}] {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return collect_rows(st, seed, rates, sweep_dir, study_duration(st, quick))


def collect_rows(st: Study, seed: int, rates: list[float], sweep_dir: Path,
                 duration_s: float | None = None) -> list[dict]:
    """Summary rows of a study's finished jobs under ``sweep_dir`` for ``seed``, ``rates`` and
    (if given) the ``duration_s`` window; one row per (rate, policy) or an error."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no sweep output for study {st.name!r} "
                                "(run without --report-only first)")
    rows: list[dict] = []
    seen: dict[tuple[float, str], Path] = {}
    for job in sorted(p for p in sweep_dir.iterdir() if (p / "summary.csv").is_file()):
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        rate = float(cfg["workload"]["rate"])
        if rate not in rates or int(cfg["seed"]) != seed:
            continue
        if duration_s is not None and float(cfg["workload"]["duration_s"]) != duration_s:
            continue
        with open(job / "summary.csv") as f:
            for r in csv.DictReader(f):
                key = (rate, r["policy"])
                if key in seen:
                    raise ValueError(f"{st.name}: rate {rate} / {r['policy']} appears in both "
                                     f"{seen[key]} and {job}; remove the stale job")
                seen[key] = job
                r.update(study=st.name, rate=rate, job=str(job))
                rows.append(r)
    if not rows:
        raise ValueError(f"{sweep_dir}: no finished job for seed {seed} and rates {rates}")
    return rows


def capacity(rows: list[dict], policy: str) -> float:
    """Highest swept rate with >= 90% SLO attainment (0 if none)."""
    ok = [float(r["rate"]) for r in rows
          if r["policy"] == policy and float(r["slo_attainment"]) >= 0.9]
    return max(ok, default=0.0)


def stress_rate(rows: list[dict]) -> float | None:
    """Highest swept rate where vllm's SLO attainment is in [10%, 50%)."""
    ok = [float(r["rate"]) for r in rows
          if r["policy"] == "vllm" and 0.1 <= float(r["slo_attainment"]) < 0.5]
    return max(ok, default=None)


def f(x: str | float, fmt: str = ".2f") -> str:
    try:
        return format(float(x), fmt)
    except (TypeError, ValueError):
        return "-"


def report(all_rows: list[dict], out: Path, studies_run: list[Study], tag: str = "paper") -> str:
    """The markdown report; figures go to ``out/<tag>_<study>_*.png``."""
    lines = ["# The paper's comparison", "",
             "Effective throughput = goodput under the SLO (req/s meeting it, per second of "
             "arrival window). Capacity = highest swept rate with >= 90% SLO attainment. "
             "Stress point = highest swept rate where vllm's attainment is in [10%, 50%).", ""]
    for st in studies_run:
        rows = [r for r in all_rows if r["study"] == st.name]
        if not rows:
            continue
        lines += [f"## {st.name}", "", st.notes, ""]
        lines += ["| policy | rate | goodput | SLO att. | TTFT p50 ms | TTFT p99 ms | "
                  "norm lat p50 ms/tok | preempt |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (float(r["rate"]), POLICIES.index(r["policy"]))):
            lines.append(f"| {r['policy']} | {f(r['rate'], '.1f')} | {f(r['goodput'])} | "
                         f"{f(100 * float(r['slo_attainment']), '.1f')}% | "
                         f"{f(r['median_ttft_ms'], '.0f')} | {f(r['p99_ttft_ms'], '.0f')} | "
                         f"{f(r['median_norm_latency_ms'], '.1f')} | {r['preemptions']} |")
        lines.append("")
        if st.sweep:
            caps = {p: capacity(rows, p) for p in POLICIES}
            lines += ["| policy | capacity (req/s) |", "|---|---|"]
            lines += [f"| {p} | {caps[p]:.1f} |" for p in POLICIES]
            lines.append("")
            sr = stress_rate(rows)
            if sr is not None:
                at = {r["policy"]: r for r in rows if float(r["rate"]) == sr}
                g = {p: float(at[p]["goodput"]) for p in at}
                t = {p: float(at[p]["median_ttft_ms"]) for p in at}

                def ratio(a: float, b: float) -> str:
                    return f"{a / b:.2f}x" if b > 0 else "inf"

                lines += [
                    f"Stress point: {sr:.1f} req/s. augserve effective throughput = "
                    f"{ratio(g['augserve'], g['vllm'])} vllm, "
                    f"{ratio(g['augserve'], g['infercept'])} infercept, "
                    f"{100 * g['augserve'] / g['oracle']:.0f}% of oracle; "
                    f"TTFT p50 {100 * (1 - t['augserve'] / t['vllm']):.0f}% below vllm, "
                    f"{100 * (1 - t['augserve'] / t['infercept']):.0f}% below infercept. "
                    f"Capacity augserve/infercept = "
                    f"{ratio(caps['augserve'], caps['infercept'])}."
                    + (f" Learned Stage II (rl_ckpt) = {ratio(g['rl_ckpt'], g['augserve'])} "
                       f"augserve." if "rl_ckpt" in g else ""), ""]
                recs = {}
                job = Path(next(iter(at.values()))["job"])
                for p in at:
                    recs[p] = _records(job / p / "requests.csv")
                plot_ttft_cdf(recs, out / f"{tag}_{st.name}_ttft_cdf.png")
            plot_goodput_vs_rate(rows, out / f"{tag}_{st.name}_goodput.png")
            plot_goodput_vs_rate(rows, out / f"{tag}_{st.name}_attainment.png",
                                 metric="slo_attainment")
    return "\n".join(lines) + "\n"


def _records(path: Path):
    """Minimal records (TTFT only) rebuilt from a requests.csv, for the CDF plot."""
    from augserve.records import RequestRecord

    out = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            rec = RequestRecord(rid=r["rid"], aug_type=r["aug_type"],
                                arrival_s=float(r["arrival_s"]), prompt_tokens=0,
                                expected_output_tokens=0, num_calls=0)
            if r["ttft_s"]:
                rec.token_s = np.array([float(r["arrival_s"]) + float(r["ttft_s"])])
            out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=None,
                    help="tables and figures (default: experiments/results; with --quick "
                    "multirun/paper_quick/report, so a smoke run never replaces the committed "
                    "results)")
    ap.add_argument("--quick", action="store_true", help="3 rates, 120 s windows (smoke run)")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild the tables and figures from the last run's multirun/paper/ "
                    "(with --quick: multirun/paper_quick/)")
    args = ap.parse_args()
    data_dir = str(Path(args.data).resolve())
    chosen = [s for s in studies(data_dir) if args.studies == "all" or s.name in
              args.studies.split(",")]
    rows: list[dict] = []
    for st in chosen:
        if args.report_only:
            rates = st.rates[:3] if args.quick else st.rates
            rows += collect_rows(st, args.seed, rates, sweep_root(args.quick) / st.name,
                                 study_duration(st, args.quick))
        else:
            rows += run_study(st, args.seed, data_dir, args.quick)
    out = Path(args.out) if args.out else output_dir(args.quick)
    out.mkdir(parents=True, exist_ok=True)
    tag = "paper_quick" if args.quick else "paper"
    cols = ["study", "rate", *[c for c in rows[0] if c not in ("study", "rate", "job")]]
    with open(out / f"{tag}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md = report(rows, out, chosen, tag)
    (out / f"{tag}.md").write_text(md)
    print(md)
    print(f"written: {out}/{tag}.csv, {tag}.md, {tag}_*.png")


if __name__ == "__main__":
    main()
