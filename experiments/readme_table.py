"""Print the README's comparison summary from experiments/results/paper.csv (not a test).

    python experiments/readme_table.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from paper import POLICIES  # experiments/paper.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    rows = list(csv.DictReader(open(ROOT / "experiments" / "results" / "paper.csv")))
    studies = list(dict.fromkeys(r["study"] for r in rows))
    print("| study | rate | " + " | ".join(POLICIES) + " |")
    print("|---|---|" + "---|" * len(POLICIES))
    for st in studies:
        sub = [r for r in rows if r["study"] == st]
        rates = sorted({float(r["rate"]) for r in sub})
        vl = {float(r["rate"]): float(r["slo_attainment"]) for r in sub if r["policy"] == "vllm"}
        stress = max((x for x in rates if 0.1 <= vl.get(x, 0) < 0.5), default=None)
        show = [stress] if stress is not None else rates[-1:]
        for rate in show:
            d = {r["policy"]: r for r in sub if float(r["rate"]) == rate}
            cells = [f"{float(d[p]['goodput']):.2f} ({100 * float(d[p]['slo_attainment']):.0f}%)"
                     if p in d else "-" for p in POLICIES]
            tag = " (stress)" if rate == stress else ""
            print(f"| {st} | {rate:.1f}{tag} | " + " | ".join(cells) + " |")
    print()
    print("| study | " + " | ".join(POLICIES) + " |")
    print("|---|" + "---|" * len(POLICIES))
    for st in studies:
        sub = [r for r in rows if r["study"] == st]
        if len({r["rate"] for r in sub}) < 2:
            continue
        caps = []
        for p in POLICIES:
            ok = [float(r["rate"]) for r in sub
                  if r["policy"] == p and float(r["slo_attainment"]) >= 0.9]
            caps.append(f"{max(ok, default=0.0):.1f}")
        print(f"| {st} capacity | " + " | ".join(caps) + " |")


if __name__ == "__main__":
    main()
