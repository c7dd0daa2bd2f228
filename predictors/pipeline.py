"""The Stage I training pipeline behind ``python train.py`` (conf/train.yaml).

:func:`train_predictors` loads the sources, builds the per-target samples, evaluates every
method in ``eval.methods`` within datasets (a group-aware split) and across datasets (train on
the others, test on one), and writes the configured family's models fit on the within-dataset
training rows as the servable artifact to ``artifact_dir`` (its ``split.json`` names the
held-out rows, which evaluation workloads then draw: :mod:`augserve.workload.holdout`) and
``metrics.json``, ``metrics.md`` and ``feature_importance.png`` to the
output directory, and sends the results to an experiment logger. Relative paths in the config
(``data_dir``, ``artifact_dir``) are relative to the directory the run was started from
(:func:`hydra.utils.to_absolute_path`; the process's cwd outside a Hydra run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from augserve.loggers import NULL_LOGGER, Logger
from predictors.artifact import save_artifact
from predictors.data import load_source
from predictors.evaluate import evaluate, exclusions, format_tables, within_split
from predictors.features import FeatureSpec
from predictors.models import SERVABLE, build_samples, fit_family, subset

#: the files :func:`train_predictors` writes into its output directory
REPORT_FILES = ("metrics.json", "metrics.md", "feature_importance.png")


def plot_importance(importances: Mapping[str, Mapping[str, float]], path: Path,
                    top: int = 20) -> None:
    """One horizontal bar chart per target of its ``top`` largest feature importances (the
    model's own units: LightGBM gain, |coefficient| of a linear model) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(importances), figsize=(5 * len(importances), 6),
                             squeeze=False)
    for ax, (target, imp) in zip(axes[0], importances.items(), strict=True):
        items = sorted(imp.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set_title(f"{target}: importance")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def split_record(rows: Sequence[Any], test_mask: np.ndarray, test_size: float,
                 seed: int) -> dict[str, Any]:
    """The artifact's ``split.json``: held-out row ids per dataset (sorted) and the rule."""
    held: dict[str, list[str]] = {r.source: [] for r in rows}  # (a dataset too small to
    for r, t in zip(rows, test_mask, strict=True):                # split holds out nothing)
        if t:
            held[r.source].append(str(r.rid))
    return {"method": "per dataset, sklearn GroupShuffleSplit by row.group "
                      "(predictors.evaluate.within_split); models fit on the rest",
            "test_size": test_size, "seed": seed, "train_rows": int((~test_mask).sum()),
            "held_out": {s: sorted(v) for s, v in sorted(held.items())}}


def train_predictors(cfg: DictConfig | Mapping[str, Any], out_dir: str | Path,
                     logger: Logger = NULL_LOGGER, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate and save the Stage I predictors of a ``conf/train.yaml`` config.

    ``cfg`` needs ``predictor`` (``kind``, optional ``params``), ``seed``, ``num_threads``,
    ``data_dir``, ``sources``, ``features`` (:class:`~predictors.features.FeatureSpec`),
    ``eval`` (``methods``, ``test_size`` as a fraction of groups, ``across``) and
    ``artifact_dir``. Prints the load report and the metric tables, writes
    :data:`REPORT_FILES` into ``out_dir`` (the PNG only when a model has importances) and logs
    the results to ``logger`` (which the caller closes).

    Returns ``metrics`` (what ``metrics.json`` holds; ``train_wall_s`` in s), ``artifact`` (the
    artifact directory, or ``None`` for an evaluation-only kind), ``importance_png`` (its path,
    or ``None``), ``wall_s`` (s from the start to the end of the final fit) and ``objective``
    (the configured kind's within-dataset Kendall tau of output length over all sources; NaN if
    absent).
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    kind = str(cfg.predictor.kind)
    seed, threads = int(cfg.seed), int(cfg.num_threads)
    params = (OmegaConf.to_container(cfg.predictor.params, resolve=True)
              if cfg.predictor.get("params") is not None else {})
    run_config = OmegaConf.to_container(cfg, resolve=True)

    # -- data -------------------------------------------------------------------------------
    data_dir = Path(to_absolute_path(str(cfg.data_dir)))
    rows: list[Any] = []
    reports: dict[str, Any] = {}
    for name in cfg.sources:
        src_rows, rep = load_source(str(name), data_dir)
        rows += src_rows
        reports[str(name)] = {"rows": rep.rows, "raw_records": rep.raw_records,
                              "files": rep.files, "skipped": dict(rep.skipped),
                              "missing_fields": dict(rep.missing_fields)}
        print(f"{name:>14}: {rep.rows:5d} rows from {rep.raw_records} raw records in "
              f"{rep.files} files; skipped {dict(rep.skipped) or 0}; "
              f"missing {dict(rep.missing_fields) or 0}")
    if not rows:
        raise ValueError(f"no rows loaded from {data_dir} for sources {list(cfg.sources)}")
    spec = FeatureSpec(**OmegaConf.to_container(cfg.features, resolve=True))
    data = build_samples(rows, spec)
    excl = exclusions(rows)
    print("samples per target: " + ", ".join(f"{t}={len(d.y)}" for t, d in data.items()))
    for t, per in excl.items():
        if per:
            print(f"excluded from {t} (target unknown): {sum(per.values())} rows {per}")
    names = [*spec.sources, "other"]

    # -- evaluation -------------------------------------------------------------------------
    methods = [str(m) for m in cfg.eval.methods]
    if kind not in methods:
        methods.insert(0, kind)

    def fit(method: str, train: dict[str, Any]) -> dict[str, Any] | None:
        if method == "oracle":
            return None
        return fit_family(method, train, spec, params if method == kind else None, seed,
                          threads)

    test_mask = within_split(rows, float(cfg.eval.test_size), seed)
    row_src = np.array([r.source for r in rows])
    present = [s for s in cfg.sources if (row_src == s).any()]
    jobs: list[tuple[str, str | None]] = [("within", None)]
    if cfg.eval.across and len(present) > 1:
        jobs += [("across", s) for s in present]
    results: dict[str, dict[str, Any]] = {"within": {}, "across": {}}
    eval_models: dict[str, Any] = {}
    bar = tqdm(total=len(jobs) * len(methods), desc="evaluate", disable=not progress)
    with threadpool_limits(threads):
        for setting, held in jobs:
            if held is None:
                train_m, test_m = ~test_mask, test_mask
            else:
                train_m, test_m = row_src != held, row_src == held
            tr = {t: subset(d, train_m) for t, d in data.items()}
            te = {t: subset(d, test_m) for t, d in data.items()}
            for method in methods:
                bar.set_postfix_str(f"{setting}{'/' + held if held else ''}/{method}")
                models = fit(method, tr)
                res = evaluate(method, models, te, names, overall=held is None)
                if held is None:
                    results["within"][method] = res
                    eval_models[method] = models
                else:
                    results["across"].setdefault(method, {}).update(res)
                bar.update()
        bar.close()
        if not results["across"]:
            del results["across"]

        # -- the served models: the within-dataset training rows only ------------------------
        split = split_record(rows, test_mask, float(cfg.eval.test_size), seed)
        metrics = {"kind": kind, "rows": len(rows), "train_rows": split["train_rows"],
                   "sources": reports, "samples": {t: len(d.y) for t, d in data.items()},
                   "excluded": excl, "results": results}
        art_path = None
        final = None
        if kind in SERVABLE:
            # the within evaluation fit exactly these (same rows, params and seed): its
            # held-out scores are the served models'
            final = eval_models[kind]
            art_path = save_artifact(to_absolute_path(str(cfg.artifact_dir)), kind, spec,
                                     final, config=run_config, metrics=metrics, split=split)
        else:
            print(f"predictor kind {kind!r} is evaluation-only: no artifact written")
    elapsed = time.perf_counter() - t0
    metrics["train_wall_s"] = elapsed

    # -- reports ----------------------------------------------------------------------------
    tables = format_tables(results)
    print("\n" + tables)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    (out_dir / "metrics.md").write_text(
        f"# Stage I predictors ({kind}), {len(rows)} rows, seed {seed}\n\n{tables}\n")
    importances: dict[str, dict[str, float]] = {}  # of the final models, else of lgbm/linear
    for imp_src in (final, eval_models.get("lgbm"), eval_models.get("linear")):
        for t in ("output", "remaining"):
            imp = imp_src[t].importance() if imp_src and t in imp_src else None
            if imp:
                importances[t] = imp
        if importances:
            break
    png = out_dir / REPORT_FILES[2]
    if importances:
        plot_importance(importances, png)
    for setting, by_method in results.items():
        for method, per in by_method.items():
            for src, m in per.items():
                logger.log_summary(f"{setting}/{method}/{src}", m)
    for t, imp in importances.items():
        logger.log_summary(f"importance/{t}", imp)
    if importances:
        logger.log_images({"feature_importance": png})
    within_all = results["within"].get(kind, {}).get("all", {})
    return {"metrics": metrics, "artifact": art_path,
            "importance_png": png if importances else None, "wall_s": elapsed,
            "objective": float(within_all.get("out_tau", float("nan")))}
