"""Serve a workload under one or more scheduling policies and compare them.

    python serve.py                                   # the embedded default comparison
    python serve.py policy=infercept workload=infercept_json workload.rate=3.0 seed=1
    python serve.py -m workload.rate=1,2,3,4 policy=vllm,infercept
    python serve.py server=openai policy=augserve     # vLLM's OpenAI server with the policy

Results go to the Hydra output directory (printed at the end).
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from augserve.report import comparison_table
from augserve.serving import run_policies, split_policy_config

log = logging.getLogger("serve")


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> float:
    if cfg.get("server"):
        return serve_openai(cfg)
    out_dir = HydraConfig.get().runtime.output_dir
    if cfg.get("note"):
        print(cfg.note, flush=True)
    policies_cfg = cfg.get("policies") or {}
    if not policies_cfg:
        raise ValueError("no policy selected: use policy=<name> (see conf/policy/)")
    engine = instantiate(cfg.engine)
    workload = instantiate(cfg.workload)
    policies, engines, labels = {}, {}, {}
    for name, p in policies_cfg.items():
        own, label, engine_over = split_policy_config(p)
        policies[name] = instantiate(own)
        if engine_over:  # this row's engine differs (e.g. vllm_nocache)
            engines[name] = instantiate(cfg.engine, **engine_over)
        if label:
            labels[name] = label
    # partial: a run_config passed to instantiate would itself be instantiated (recursively:
    # the engine, the policies, and a second logger)
    logger = instantiate(cfg.logger, _partial_=True)(
        run_config=OmegaConf.to_container(cfg, resolve=True))
    try:
        summaries = run_policies(
            workload, engine, policies, cfg.slo.spec, int(cfg.seed), out_dir,
            progress=bool(cfg.progress), plots=bool(cfg.plots), logger=logger,
            engines=engines, labels=labels,
        )
    finally:
        logger.close()
    print(comparison_table(summaries))
    print(f"\nresults: {out_dir}  (comparison.md, summary.csv, ttft_cdf.png, goodput.png, "
          f"<policy>/requests.csv)")
    # the return value lets sweepers optimize on goodput of the (first) policy
    return float(next(iter(summaries.values()))["goodput"])


def serve_openai(cfg: DictConfig) -> float:
    """``server=openai``: replace this process with vLLM's OpenAI server running the policy."""
    import shlex
    import sys

    from augserve.vllm import VLLMNotInstalled, require_vllm
    from augserve.vllm.server import command_from_config, exec_server

    sections = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(sections, dict)
    cmd = command_from_config(sections["server"], sections.get("policies") or {},
                              sections.get("predictor"), cfg.slo.spec)
    if cfg.server.print_only:
        print(shlex.join(cmd))
        return 0.0
    try:
        require_vllm()
    except VLLMNotInstalled as e:
        print(f"serve.py server=openai: {e}", file=sys.stderr)
        sys.exit(2)
    log.info("starting: %s", shlex.join(cmd))
    exec_server(cmd)
    return 0.0  # not reached


if __name__ == "__main__":
    main()
