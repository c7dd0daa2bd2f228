"""augserve.slo: one judgement, whether asked per request (the RL reward) or for a whole run
(the metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from augserve.engine.factory import make_sim_engine
from augserve.metrics import per_request_table
from augserve.sched.vllm import VLLMPolicy
from augserve.serving import prepare_requests
from augserve.slo import meets, parse_slo, slo_values
from augserve.workload import make_augmix


def test_scalar_values_follow_the_definitions() -> None:
    v = slo_values(0.5, 10.5, 4.0, 11)
    assert v["ttft"] == 0.5 and v["e2el"] == 10.5 and v["e2el_no_tool"] == 6.5
    assert v["tpot"] == pytest.approx(1.0) and v["norm"] == pytest.approx(6.5 / 11)
    assert slo_values(0.5, 0.5, 0.0, 1)["tpot"] == 0.0  # one token: TPOT 0, as vLLM
    assert meets(v, parse_slo("ttft:500 tpot:1000"))  # inclusive
    assert not meets(v, parse_slo("ttft:499"))
    assert not meets(slo_values(math.nan, math.nan, 0.0, 0), parse_slo("ttft:1000"))


@pytest.mark.parametrize("spec", ["ttft:1000", "ttft:2000 tpot:60", "e2el_no_tool:8000 norm:90"])
def test_per_request_judgement_equals_the_run_table(spec: str) -> None:
    engine = make_sim_engine(max_time_s=40.0)  # some requests stay unfinished
    reqs = prepare_requests(make_augmix(rate=14.0, duration_s=30.0), engine, seed=5)
    records = engine.run(reqs, VLLMPolicy(2048)).records
    table = per_request_table(records, spec)
    slo = parse_slo(spec)
    one_by_one = []
    for r in records:
        n = r.token_s.shape[0]
        if not r.finished or n == 0:
            one_by_one.append(False)
            continue
        v = slo_values(r.token_s[0] - r.arrival_s, r.finish_s - r.arrival_s, r.tool_time_s, n)
        one_by_one.append(bool(meets(v, slo)))
    assert [row["meets_slo"] for row in table] == one_by_one
    assert 0 < sum(one_by_one) < len(records)  # both outcomes occur
    assert not np.all([r.finished for r in records])
