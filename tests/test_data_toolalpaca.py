"""ToolAlpaca converter: the real evaluation sets / model outputs and malformed inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from augserve.workload.tokens import count_tokens
from predictors.data import load_source
from predictors.data.toolalpaca import convert

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOLDER = DATA / "toolalpaca"


@pytest.fixture(scope="module")
def converted():
    if not FOLDER.is_dir():
        pytest.skip(f"real data absent: {FOLDER}")
    return load_source("toolalpaca", DATA)


def _split(rows, name):
    return [r for r in rows if r.meta["split"] == name]


def test_gold_counts(converted):
    rows, _ = converted
    real, sim = _split(rows, "eval_real"), _split(rows, "eval_simulated")
    # jq '[.[].Instructions|length]|add' eval_real.json eval_simulated.json -> 114, 100
    assert len(real) == 114 and len(sim) == 100
    # jq -r '.[].Golden_Answers[]|length' <file> | sort -n | uniq -c
    assert Counter(r.num_calls for r in real) == {1: 94, 2: 13, 3: 6, 5: 1}
    assert Counter(r.num_calls for r in sim) == {1: 57, 2: 35, 3: 6, 4: 1, 5: 1}
    for r in real + sim:
        assert r.segment_tokens == [None] * (r.num_calls + 1)
        assert r.return_tokens == [None] * r.num_calls and r.response_tokens is None
        assert r.tools and "components" not in r.tools and r.tools_schema_tokens > 0


def test_model_output_counts(converted):
    rows, report = converted
    out = _split(rows, "model_output")
    by_model = Counter(r.meta["model"] for r in out)
    # jq '[to_entries[]|select(.key!="statistics")|.value[]|select(.input|type=="array")]
    #   |length' evaluation_outputs/ToolAlpaca{7b,13b}.json -> 99, 97 (of 100 each)
    assert by_model == {"ToolAlpaca7b": 99, "ToolAlpaca13b": 97}
    assert report.skipped == {"evaluation_error_entry": 4}
    # jq: per entry, [scan("(?m)^[0-9]+\\. Function:")] | length of the solution section
    hist7 = Counter(r.num_calls for r in out if r.meta["model"] == "ToolAlpaca7b")
    hist13 = Counter(r.num_calls for r in out if r.meta["model"] == "ToolAlpaca13b")
    assert hist7 == {1: 69, 2: 18, 3: 9, 4: 2, 11: 1}
    assert hist13 == {1: 67, 2: 20, 3: 7, 4: 1, 5: 2}
    assert report.raw_records == 214 + 200 and report.rows == len(rows) == 410
    for r in out:
        assert r.response_tokens is not None and r.response_tokens == r.segment_tokens[-1]
        assert all(isinstance(x, int) and x > 0 for x in r.return_tokens)
    assert len({r.rid for r in rows}) == len(rows)


def test_hand_checked_rows(converted):
    rows, _ = converted
    by = {r.rid: r for r in rows}
    g = by["eval_real/Nager.Date/0"]
    assert g.prompt_text == "Can you check if today is a public holiday in China?"
    assert g.calls == ["PublicHolidayIsTodayPublicHoliday"] and g.group == "toolalpaca:Nager.Date"
    m = by["ToolAlpaca13b/Axolotl/0"]
    assert m.prompt_text == "Hey, can you show me a random picture of an axolotl?"
    assert m.calls == ["getRandomAxolotlImage"] and m.meta["instruction_index"] == 0
    assert m.return_tokens[0] == count_tokens(
        'Status Code: 200. Response: {"url":"https://theaxolotlapi.netlify.app/images/axolotl1.jpg"'
        ',"source":"https://unsplash.com/photos/nZ9dIyPqJhQ","description":"A beautiful albino '
        'axolotl swimming in a tank."}'
    )
    assert m.response_tokens == count_tokens(
        "Here is a random picture of an axolotl: https://theaxolotlapi.netlify.app/images/"
        "axolotl1.jpg. This image is an albino axolotl swimming in a tank, and was sourced from "
        "https://unsplash.com/photos/nZ9dIyPqJhQ."
    )
    assert m.group == by["eval_simulated/Axolotl/0"].group == "toolalpaca:Axolotl"


def _api(**over) -> dict:
    api = {
        "Name": "Foo",
        "Function_Description": {"getFoo": "Get foo.", "components": ""},
        "NLDocumentation": "getFoo: Get foo.",
        "Instructions": ["Get me foo.", "Get me more foo."],
        "Golden_Answers": [[{"Action": "getFoo", "Action_Input": "{}"}]] * 2,
    }
    api.update(over)
    return api


def test_malformed_files_raise(tmp_path):
    folder = tmp_path / "toolalpaca"
    folder.mkdir()
    (folder / "eval_real.json").write_text('[{"Name": "Foo", ')
    with pytest.raises(ValueError, match="eval_real.json"):
        convert(tmp_path)
    (folder / "eval_real.json").write_text('{"Name": "Foo"}')
    with pytest.raises(ValueError, match="eval_real.json.*list"):
        convert(tmp_path)
    (folder / "eval_real.json").write_text(json.dumps([_api()]))
    (folder / "evaluation_outputs").mkdir()
    (folder / "evaluation_outputs" / "ToolAlpaca7b.json").write_text("[]")
    with pytest.raises(ValueError, match="ToolAlpaca7b.json"):
        convert(tmp_path)


def test_bad_records_are_counted(tmp_path):
    folder = tmp_path / "toolalpaca"
    (folder / "evaluation_outputs").mkdir(parents=True)
    broken = _api(Name="Bar")
    del broken["Golden_Answers"]
    (folder / "eval_simulated.json").write_text(json.dumps([_api(), broken]))
    content = (
        "## Task Instruction\nGet me foo.\n\n## Standard Answer\n1. Function: getFoo\n"
        "Parameters: {}\n\n\n## AI Assistant's Solution\n1. Function: getFoo\nParameters: {}\n"
        "Retruns: Status Code: 200. Response: foo\n2. Final Response: Here is foo.\n\n## Analysis"
    )
    outputs = {
        "Foo": [
            {"input": [{"role": "user", "content": content}], "output": "ok"},
            {"input": "", "output": ""},
            {"input": [{"role": "user", "content": "## Task Instruction\nGet me foo."}]},
        ],
        "statistics": {"num": 3},
    }
    (folder / "evaluation_outputs" / "ToolAlpaca7b.json").write_text(json.dumps(outputs))
    rows, report = convert(tmp_path)
    assert [r.rid for r in rows] == [
        "eval_simulated/Foo/0",
        "eval_simulated/Foo/1",
        "ToolAlpaca7b/Foo/0",
    ]
    m = rows[-1]
    assert m.calls == ["getFoo"] and m.tools == ["getFoo"]
    assert m.return_tokens == [count_tokens("Status Code: 200. Response: foo")]
    assert m.response_tokens == count_tokens("Here is foo.")
    assert report.raw_records == 4 + 3
    assert report.skipped == {
        "missing_field:Golden_Answers": 2,
        "evaluation_error_entry": 1,
        "unparseable_solution": 1,
    }
