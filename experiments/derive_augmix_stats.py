"""Derive data/augmix.yaml (the built-in ``augmix`` generator's statistics) from the real file.

Reads the InferCept 6-augmentation mixture ``merged_exp_uniform.json`` from ``../shared/data``
(beside the repository) with augserve's own loader, so the statistics describe exactly the
scripts ``InferceptSource`` replays. Usage::

    python experiments/derive_augmix_stats.py [--input PATH] [--output data/augmix.yaml]

Components: one per augmentation type, plus ``ve_intkey``: 19 ALFWorld (VE) episodes stored under
integer keys that SOURCE.md's rules label ``chatbot``. They are kept as their own component
(labelled ``chatbot``, content ``ve``) so that per-type shares and means match SOURCE.md while
every generated request is internally coherent.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from augserve.request import AUG_TYPES, AugRequest
from augserve.workload.infercept_json import load_infercept_json
from augserve.workload.tokens import TOKENIZER

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "infercept_mix" / "merged_exp_uniform.json"
LEVELS = [0.0, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99,
          0.995, 1.0]


def g4(x: float) -> float:
    """Four significant digits, as a plain float."""
    return float(f"{x:.4g}")


def quantiles(xs: list[float]) -> list[float]:
    return [g4(v) for v in np.quantile(np.asarray(xs, dtype=float), LEVELS)]


def interp_mean(q: list[float]) -> float:
    """Mean of the piecewise-linear inverse CDF through ``(LEVELS, q)``."""
    return float(sum((LEVELS[i + 1] - LEVELS[i]) * (q[i] + q[i + 1]) / 2
                     for i in range(len(LEVELS) - 1)))


def type_means(rs: list[AugRequest], n_all: int) -> dict[str, float]:
    calls = [s.call for r in rs for s in r.segments if s.call is not None]
    return {
        "requests": len(rs),
        "share": g4(len(rs) / n_all),
        "calls_per_request": g4(np.mean([r.num_calls for r in rs])),
        "trailing_call_share": g4(np.mean([r.metadata["trailing_call"] for r in rs])),
        "tool_time_s": g4(np.mean([c.duration_s for c in calls])),
        "return_tokens": g4(np.mean([c.return_tokens for c in calls])),
        "gen_tokens_per_segment": g4(np.mean([s.gen_tokens for r in rs for s in r.segments])),
        "output_tokens_per_request": g4(np.mean([r.output_tokens for r in rs])),
        "prompt_tokens": g4(np.mean([r.prompt_tokens for r in rs])),
    }


def component(rs: list[AugRequest], n_all: int) -> dict:
    calls = [s.call for r in rs for s in r.segments if s.call is not None]
    gen_call = [s.gen_tokens for r in rs for s in r.segments if s.call is not None]
    gen_final = [r.segments[-1].gen_tokens for r in rs if not r.metadata["trailing_call"]]
    ncalls = Counter(r.num_calls for r in rs)
    out = {
        "aug_type": rs[0].aug_type,
        "content_type": rs[0].metadata["content_type"],
        "requests": len(rs),
        "share": g4(len(rs) / n_all),
        "calls_pmf": {k: g4(ncalls[k] / len(rs)) for k in sorted(ncalls)},
        "trailing_call_share": g4(np.mean([r.metadata["trailing_call"] for r in rs])),
        "prompt_tokens": quantiles([r.prompt_tokens for r in rs]),
        "gen_tokens_call": quantiles(gen_call),
        "gen_tokens_final": quantiles(gen_final) if gen_final else None,
        "tool_time_s": quantiles([c.duration_s for c in calls]),
        "return_tokens": quantiles([c.return_tokens for c in calls]),
    }
    for f in ("prompt_tokens", "gen_tokens_call", "tool_time_s", "return_tokens"):
        src = {"prompt_tokens": [r.prompt_tokens for r in rs], "gen_tokens_call": gen_call,
               "tool_time_s": [c.duration_s for c in calls],
               "return_tokens": [c.return_tokens for c in calls]}[f]
        m, qm = float(np.mean(src)), interp_mean(out[f])
        print(f"  {out['aug_type']:8s}/{out['content_type']:3s} {f:16s} mean {m:10.4g}  "
              f"quantile-interp mean {qm:10.4g}  ({(qm - m) / m * 100 if m else 0:+.1f}%)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    ap.add_argument("--output", type=Path, default=REPO / "data" / "augmix.yaml")
    args = ap.parse_args()
    rs = load_infercept_json(args.input)
    n = len(rs)
    sha = hashlib.sha256(args.input.read_bytes()).hexdigest()
    groups: dict[str, list[AugRequest]] = {}
    for r in rs:
        name = r.aug_type if r.aug_type == r.metadata["content_type"] else "ve_intkey"
        groups.setdefault(name, []).append(r)
    order = [t for t in AUG_TYPES if t in groups] + sorted(set(groups) - set(AUG_TYPES))
    doc = {
        "source": {
            "file": "infercept_mix/merged_exp_uniform.json (InferCept/LAMPS 6-augment mixture)",
            "sha256": sha,
            "requests": n,
            "calls": sum(r.num_calls for r in rs),
            "tokenizer": TOKENIZER,
            "labels": "SOURCE.md key rules (integer keys = chatbot)",
        },
        "quantile_levels": LEVELS,
        "components": {},
        "source_means": {},
    }
    print("quantile interpolation vs data means:")
    for name in order:
        doc["components"][name] = component(groups[name], n)
    for t in AUG_TYPES:
        sub = [r for r in rs if r.aug_type == t]
        if sub:
            doc["source_means"][t] = type_means(sub, n)
    header = (
        "# Statistics of the built-in `augmix` workload (augserve.workload.augmix.AugMixSource).\n"
        "# Generated by experiments/derive_augmix_stats.py from the InferCept/LAMPS mixture\n"
        "# merged_exp_uniform.json (github.com/mars-repository/mars-codebase @ 4cedd10,\n"
        "# Apache-2.0; see ../shared/data/infercept_mix/SOURCE.md), loaded with augserve's\n"
        "# InferCept loader:\n"
        "# calls counted the InferCept way (1841), a call on the last segment followed by a\n"
        "# 1-token segment, text tokenized with GPT-2 BPE. Per component: share of requests,\n"
        "# pmf of calls per request, share of requests whose last call is trailing, and\n"
        "# empirical quantiles (at quantile_levels) of prompt tokens, generated tokens of a\n"
        "# segment that ends in a call, of the final segment (requests without a trailing call),\n"
        "# tool time (s) per call and returned tokens per call. `source_means` are the real\n"
        "# file's per-type means (SOURCE.md labels) that tests/test_augmix.py checks against.\n"
        "# Regenerate instead of editing by hand.\n"
    )
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(header + body, encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
