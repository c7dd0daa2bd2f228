"""The benchmark suite (``experiments/conf/suite.yaml``): workloads with their profile, SLO,
arrival window and rate grid, the development and evaluation seeds, and what "never trained on
it" means per workload. ``experiments/paper.py`` reads its studies from it; a bad entry is a
:class:`~augserve.workload.errors.WorkloadError` naming file, line and field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from augserve.engine.cost import available_profiles
from augserve.slo import parse_slo
from augserve.workload.errors import WorkloadError, yaml_key_lines

SUITE_PATH = Path(__file__).resolve().parents[1] / "experiments" / "conf" / "suite.yaml"


@dataclass(frozen=True)
class SuiteWorkload:
    """One workload of the suite; ``rates`` in ``unit`` (requests/s or sessions/s)."""

    name: str
    overrides: tuple[str, ...]
    profile: str
    slo: str
    unit: str
    rates: tuple[float, ...]
    notes: str
    never_trained_on: dict[str, str]
    variant_of: str | None = None

    def serve_overrides(self, data_dir: str) -> list[str]:
        """``serve.py`` overrides for this workload (``${data_dir}`` filled in)."""
        return [o.replace("${data_dir}", data_dir) for o in self.overrides] + [
            f"engine.profile={self.profile}", f"slo.spec='{self.slo}'"]


@dataclass(frozen=True)
class Suite:
    development_seeds: tuple[int, ...]
    evaluation_seeds: tuple[int, ...]
    workloads: dict[str, SuiteWorkload]


def load_suite(path: str | Path = SUITE_PATH) -> Suite:
    """The suite at ``path``, checked: every field present and in range, seeds disjoint."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    lines = yaml_key_lines(text)

    def err(reason: str, *keys: str) -> WorkloadError:
        line = next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines),
                    None)
        return WorkloadError(reason, file=p, line=line, field=".".join(keys) or None)

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise WorkloadError(f"invalid YAML: {e}", file=p,
                            line=None if mark is None else mark.line + 1) from None
    if not isinstance(doc, dict):
        raise err("must be a mapping with 'seeds' and 'workloads'")

    def seeds(key: str) -> tuple[int, ...]:
        v = (doc.get("seeds") or {}).get(key)
        if (not isinstance(v, list) or not v
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
            raise err("must be a non-empty list of integers", "seeds", key)
        return tuple(v)

    dev, ev = seeds("development"), seeds("evaluation")
    if set(dev) & set(ev):
        raise err(f"shares seeds {sorted(set(dev) & set(ev))} with seeds.development",
                  "seeds", "evaluation")
    ws = doc.get("workloads")
    if not isinstance(ws, dict) or not ws:
        raise err("must be a non-empty mapping", "workloads")
    profiles = set(available_profiles())
    out: dict[str, SuiteWorkload] = {}
    for name, w in ws.items():
        k = ("workloads", str(name))
        if not isinstance(w, dict):
            raise err("must be a mapping", *k)

        def get(field: str, w: dict[str, Any] = w, k: tuple[str, ...] = k) -> Any:
            if field not in w:
                raise err("missing", *k, field)
            return w[field]

        ov = get("overrides")
        if not isinstance(ov, list) or not ov or not all(isinstance(o, str) and "=" in o
                                                         for o in ov):
            raise err("must be a non-empty list of key=value overrides", *k, "overrides")
        prof = get("profile")
        if prof not in profiles:
            raise err(f"unknown profile {prof!r}; shipped: {', '.join(sorted(profiles))}",
                      *k, "profile")
        slo = get("slo")
        try:
            if not parse_slo(slo):
                raise ValueError("empty")
        except ValueError as e:
            raise err(f"not an SLO ({e})", *k, "slo") from None
        rates = get("rates")
        if (not isinstance(rates, list) or len(rates) < 2
                or not all(isinstance(r, int | float) and not isinstance(r, bool) and r > 0
                           for r in rates)
                or any(b <= a for a, b in zip(rates, rates[1:], strict=False))):
            raise err("must be at least two increasing positive rates", *k, "rates")
        nto = get("never_trained_on")
        if not isinstance(nto, dict) or set(nto) != {"predictor", "policy"}:
            raise err("must give 'predictor' and 'policy'", *k, "never_trained_on")
        var = w.get("variant_of")
        if var is not None and var not in ws:
            raise err(f"names no workload of the suite: {var!r}", *k, "variant_of")
        out[str(name)] = SuiteWorkload(
            name=str(name), overrides=tuple(ov), profile=str(prof), slo=str(slo),
            unit=str(get("unit")), rates=tuple(float(r) for r in rates),
            notes=str(w.get("notes", "")),
            never_trained_on={str(a): str(b) for a, b in nto.items()}, variant_of=var)
    return Suite(dev, ev, out)
