"""One policy registry: a vLLM deployment's ``policy`` name is a conf/policy/<name>.yaml, built
as serve.py builds it (Hydra instantiate), with the deployment's predictor, SLO and budget."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from augserve.sched.augserve import AugServePolicy
from augserve.sched.vllm import VLLMPolicy
from augserve.serving import split_policy_config
from augserve.vllm import deploy
from augserve.vllm.deploy import HintPredictor, make_policy, policy_factory

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = str(ROOT / "data" / "predictors" / "lgbm")
NAMES = sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml"))
#: rows that carry engine settings (a deployment sets those as vLLM flags, not per policy)
ENGINE_ROWS = [n for n in NAMES if "engine" in yaml.safe_load(
    (ROOT / "conf" / "policy" / f"{n}.yaml").read_text())]
SERVABLE = [n for n in NAMES if n != "oracle" and n not in ENGINE_ROWS]


def _serve_factory(name: str, slo: str):
    """serve.py's policy ``name`` (predictor=lgbm), as a Hydra partial: its class and kwargs."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", [f"policy=[{name}]", "predictor=lgbm", f"slo.spec={slo}"])
    return instantiate(split_policy_config(cfg.policies[name])[0], _partial_=True)


def test_the_registry_is_conf_policy() -> None:
    assert deploy.conf_dir() == ROOT / "conf"
    assert list(deploy.policy_registry()) == NAMES
    targets = deploy.policy_targets()
    assert targets["augserve"] == "augserve.sched.augserve.AugServePolicy"
    assert targets["rl_ckpt"] == "rl.rl_policy.make_rl_policy"


@pytest.mark.parametrize("name", SERVABLE)
def test_every_policy_is_what_serve_py_instantiates(name: str) -> None:
    """Same class (or factory) and kwargs as serve.py's, but for the predictor: the deployment's
    wraps the same artifact behind the request hints."""
    slo = "ttft:500"
    serve = _serve_factory(name, slo)
    yaml_budget = serve.keywords.get("max_num_batched_tokens")  # as resolved for the simulator
    # the deployment's profile selects the same tuned settings (data/tuned/) as serve.py's
    cfg = {"policy": name, "predictor": ARTIFACT, "slo": slo, "profile": "llama3_8b_a100"}
    if yaml_budget is not None:
        cfg["max_num_batched_tokens"] = yaml_budget
    dep = policy_factory(cfg, 4096)
    assert dep.func is serve.func and dep.args == serve.args == ()
    assert set(dep.keywords) == set(serve.keywords)
    for k, v in serve.keywords.items():
        if k == "predictor":
            assert isinstance(dep.keywords[k], HintPredictor)
            assert type(dep.keywords[k].base) is type(v)
        else:
            assert dep.keywords[k] == v, k
    built, ref = dep(), serve()
    assert type(built) is type(ref)
    assert getattr(built, "ttft_s", None) == getattr(ref, "ttft_s", None)
    assert getattr(built, "budget", None) == getattr(ref, "budget", None)


@pytest.mark.parametrize("name", SERVABLE)
def test_the_budget_is_the_deployments(name: str) -> None:
    """The yaml's max_num_batched_tokens is the simulator's: a deployment's budget is its
    additional-config setting, else vLLM's cap; policy_kwargs win over both."""
    f = policy_factory({"policy": name}, 512)
    if "max_num_batched_tokens" not in inspect.signature(f.func).parameters:
        assert "max_num_batched_tokens" not in f.keywords  # rl_ckpt: the checkpoint's
        return
    assert f.keywords["max_num_batched_tokens"] == 512
    assert policy_factory({"policy": name, "max_num_batched_tokens": 256},
                          512).keywords["max_num_batched_tokens"] == 256
    assert policy_factory({"policy": name, "max_num_batched_tokens": 256,
                           "policy_kwargs": {"max_num_batched_tokens": 128}},
                          512).keywords["max_num_batched_tokens"] == 128


def test_policy_kwargs_override_the_yaml() -> None:
    a = make_policy({"policy": "augserve", "policy_kwargs": {
        "starve_after_s": None, "budget": {"b_min": 64, "b_base": 128, "b_max": 256}}}, 512)
    assert isinstance(a, AugServePolicy) and a.n_max == 512
    assert (a.budget_rule.b_min, a.budget_rule.b_base, a.budget_rule.b_max) == (64, 128, 256)
    assert a.budget_rule.mem_low == 0.1  # replaced whole: the DynamicBudget default
    assert a.ttft_s is None  # no slo setting: ${slo.spec} is None
    nb = make_policy({"policy": "augserve_no_budget"}, 512)
    assert nb.name == "augserve_no_budget" and not nb.dynamic
    assert isinstance(nb.predictor, HintPredictor) and nb.predictor.base is None


def test_unknown_name_lists_the_registry() -> None:
    with pytest.raises(ValueError, match="unknown augserve policy 'nope'") as e:
        make_policy({"policy": "nope"}, 512)
    assert all(n in str(e.value) for n in NAMES) and "module.Class" in str(e.value)


def test_oracle_is_refused_by_name_and_qualname() -> None:
    for name in ("oracle", "augserve.sched.oracle.OraclePolicy"):
        with pytest.raises(ValueError, match="reads request scripts"):
            make_policy({"policy": name}, 512)


def test_qualnames_get_constructor_defaults() -> None:
    v = make_policy({"policy": "augserve.sched.vllm.VLLMPolicy"}, 64)
    assert isinstance(v, VLLMPolicy) and v.budget == 64
    a = make_policy({"policy": "augserve.sched.augserve.AugServePolicy", "slo": "ttft:250"}, 64)
    assert isinstance(a, AugServePolicy) and a.ttft_s == 0.25 and a.n_max == 64
    assert isinstance(a.predictor, HintPredictor)


def test_rl_ckpt_checkpoint_from_the_yaml_or_policy_kwargs() -> None:
    from rl.rl_policy import RLPolicy

    rl = make_policy({"policy": "rl_ckpt", "slo": "ttft:500"}, 2048)
    assert isinstance(rl, RLPolicy) and rl.checkpoint == "data/rl/ppo" and rl.ttft_s == 0.5
    assert isinstance(rl.predictor, HintPredictor)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make_policy({"policy": "rl_ckpt", "policy_kwargs": {"checkpoint": "nowhere/ppo"}}, 2048)


def _with_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(deploy, "_CONF_CANDIDATES", (tmp_path,))


def test_nested_targets_are_instantiated_like_hydra(tmp_path, monkeypatch) -> None:
    _with_policy(tmp_path, monkeypatch, "mine", "\n".join([
        "# @package policies.mine",
        "_target_: augserve.sched.augserve.AugServePolicy",
        "predictor: ${predictor}",
        "slo: ${slo.spec}",
        "budget:",
        "  _target_: builtins.dict",  # built before the policy, as serve.py builds it
        "  b_min: 16",
        "  b_base: 32",
        "  b_max: 64",
    ]) + "\n")
    f = policy_factory({"policy": "mine", "slo": "ttft:100"}, 512)
    assert f.keywords["budget"] == {"b_min": 16, "b_base": 32, "b_max": 64}
    assert type(f.keywords["budget"]) is dict
    p = f()
    assert (p.budget_rule.b_min, p.budget_rule.b_max, p.ttft_s) == (16, 64, 0.1)


def test_a_row_with_engine_settings_is_refused_with_the_flag_to_use() -> None:
    assert ENGINE_ROWS == ["vllm_nocache"]
    with pytest.raises(ValueError, match=r"vllm_nocache.*enable_prefix_caching.*"
                                         r"--no-enable-prefix-caching"):
        make_policy({"policy": "vllm_nocache"}, 512)


def test_an_interpolation_a_deployment_lacks_is_a_clear_error(tmp_path, monkeypatch) -> None:
    _with_policy(tmp_path, monkeypatch, "seeded",
                 "_target_: augserve.sched.vllm.VLLMPolicy\nmax_num_batched_tokens: ${seed}\n")
    with pytest.raises(ValueError, match=r"seeded.*only \$\{predictor\}, \$\{slo.spec\} "
                                         r"and \$\{engine.profile\}"):
        make_policy({"policy": "seeded"}, 512)


def test_server_command_names_the_registry_entry() -> None:
    from augserve.vllm.server import command_from_config

    server = {"model": "data/models/tiny_llama", "host": "h", "port": 1, "max_num_seqs": 4,
              "max_num_batched_tokens": 64, "kv_cache_gib": 0.1, "async_scheduling": True}

    def policy_of(name: str, target: str) -> str:
        import json

        cmd = command_from_config(server, {name: {"_target_": target}}, None, None)
        return json.loads(cmd[cmd.index("--additional-config") + 1])["augserve"]["policy"]

    assert policy_of("augserve_stage1", "augserve.sched.augserve.AugServePolicy") == (
        "augserve_stage1")
    assert policy_of("augserve", "augserve.sched.vllm.VLLMPolicy") == (
        "augserve.sched.vllm.VLLMPolicy")  # an overridden _target_ travels as a qualname
