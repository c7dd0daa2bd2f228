"""The benchmark suite (experiments/conf/suite.yaml, augserve/suite.py): what it holds, that every
entry composes into a serve.py config, that paper.py runs exactly it, and bad entries refused."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from augserve.suite import SUITE_PATH, load_suite
from augserve.workload.errors import WorkloadError

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT.parent / "shared" / "data")


def test_the_suite_names_every_workload_the_issue_asks_for() -> None:
    s = load_suite()
    assert set(s.workloads) == {"augmix", "infercept_mix", "toolmix", "chat_tools",
                                "agentic_coding", "infercept_mix_bursty", "infercept_mix_azure"}
    assert s.development_seeds == (0, 1, 2, 3, 4)
    assert s.evaluation_seeds == (1000, 1001, 1002, 1003, 1004)
    assert s.workloads["agentic_coding"].profile == "llama31_8b_a100"
    assert s.workloads["chat_tools"].unit == s.workloads["agentic_coding"].unit == "sessions/s"
    for name in ("infercept_mix_bursty", "infercept_mix_azure"):
        assert s.workloads[name].variant_of == "infercept_mix"


@pytest.mark.parametrize("name", sorted(load_suite().workloads))
def test_each_entry_composes_into_a_serve_config(name: str) -> None:
    w = load_suite().workloads[name]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("serve", overrides=[*w.serve_overrides(DATA), "policy=[vllm]"])
    assert cfg.engine.profile == w.profile
    assert cfg.slo.spec == w.slo
    for o in w.overrides:
        key, value = o.split("=", 1)
        if key.startswith("workload."):
            got = cfg.workload[key.split(".", 1)[1]]
            assert str(got) == value.replace("${data_dir}", DATA) or float(got) == float(value)


def test_paper_runs_the_suite() -> None:
    spec = importlib.util.spec_from_file_location("paper", ROOT / "experiments" / "paper.py")
    paper = importlib.util.module_from_spec(spec)
    sys.modules["paper"] = paper
    spec.loader.exec_module(paper)
    st = paper.studies(DATA)
    s = load_suite()
    assert [x.name for x in st] == list(s.workloads)
    for x in st:
        assert x.rates == list(s.workloads[x.name].rates)
        assert x.overrides == s.workloads[x.name].serve_overrides(DATA)


def _bad(tmp_path: Path, old: str, new: str) -> Path:
    text = SUITE_PATH.read_text()
    assert old in text
    p = tmp_path / "suite.yaml"
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize(("old", "new", "field"), [
    ("profile: llama31_8b_a100", "profile: llama9_a100", "workloads.agentic_coding.profile"),
    ("evaluation: [1000,", "evaluation: [4,", "seeds.evaluation"),
    ("rates: [4.0, 6.0,", "rates: [6.0, 4.0,", "workloads.augmix.rates"),
    ('slo: "ttft:1000"', 'slo: "ttft:soon"', "workloads.augmix.slo"),
    ("variant_of: infercept_mix", "variant_of: nothing",
     "workloads.infercept_mix_bursty.variant_of"),
    ("    unit: requests/s\n", "", "workloads.augmix.unit"),
])
def test_a_bad_entry_names_file_line_and_field(tmp_path, old, new, field) -> None:
    p = _bad(tmp_path, old, new)
    with pytest.raises(WorkloadError) as e:
        load_suite(p)
    assert e.value.field == field and e.value.file == str(p) and e.value.line is not None
    assert f"{p}:{e.value.line}" in str(e.value)
