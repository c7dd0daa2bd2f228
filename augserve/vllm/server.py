"""Start vLLM's OpenAI-compatible server with augserve's scheduler.

    python -m augserve.vllm.server --policy augserve --predictor data/predictors/lgbm \\
        [--model data/models/tiny_llama] [--port 8000] [-- <more vLLM server flags>]

builds and runs (replacing this process)::

    python -m vllm.entrypoints.openai.api_server --model <dir> --load-format dummy \\
        --skip-tokenizer-init --enforce-eager --block-size 32 --host 127.0.0.1 --port 8000 \\
        --scheduler-cls augserve.vllm.AugServeAsyncScheduler \\
        --logits-processors augserve.vllm.validation:HintValidator \\
        --additional-config '{"augserve": {"policy": "augserve", "predictor": "..."}}'

(the ``vllm`` console script of the CPU wheel does not start; the module does).
``python serve.py server=openai policy=augserve`` does the same from the Hydra config
(``conf/server/openai.yaml``). Requests are ordinary ``/v1/completions`` calls; per-request
hints go in ``vllm_xargs`` (schema: :mod:`augserve.vllm.hints`; a malformed hint is an HTTP
400). ``OMP_NUM_THREADS`` defaults to 1: OpenMP threads that spin on a busy machine slow CPU
steps down by orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from augserve.vllm import VLLMNotInstalled, require_vllm
from augserve.vllm.deploy import policy_targets
from augserve.vllm.hints import HINT_VALIDATOR


def server_command(
    model: str = "data/models/tiny_llama",
    policy: str = "vllm",
    predictor: str | None = None,
    slo: str | None = None,
    profile: str | None = None,
    policy_kwargs: dict | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    block_size: int = 32,
    max_model_len: int | None = None,
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 512,
    kv_cache_gib: float = 0.25,
    async_scheduler: bool = True,
    extra: list[str] | None = None,
    trace: str | None = None,
) -> list[str]:
    """The argv that starts vLLM's OpenAI server with augserve's scheduler."""
    from augserve.vllm.engine import resolve_model

    aug: dict = {"policy": policy}
    for k, v in (("predictor", predictor), ("slo", slo), ("profile", profile),
                 ("policy_kwargs", policy_kwargs), ("trace", trace)):
        if v:
            aug[k] = v
    cls = "AugServeAsyncScheduler" if async_scheduler else "AugServeScheduler"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(resolve_model(model)), "--load-format", "dummy", "--skip-tokenizer-init",
        "--enforce-eager", "--block-size", str(block_size), "--host", host, "--port", str(port),
        "--max-num-seqs", str(max_num_seqs), "--max-num-batched-tokens",
        str(max_num_batched_tokens), "--kv-cache-memory-bytes", str(int(kv_cache_gib * 2**30)),
        "--scheduler-cls", f"augserve.vllm.{cls}", "--logits-processors", HINT_VALIDATOR,
        "--additional-config", json.dumps({"augserve": aug}),
    ]
    if not async_scheduler:
        cmd.append("--no-async-scheduling")
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    return cmd + list(extra or [])


def command_from_config(server: Mapping[str, Any], policies: Mapping[str, Any],
                        predictor: Mapping[str, Any] | None, slo: str | None) -> list[str]:
    """The server argv for ``serve.py server=openai`` (resolved Hydra config sections).

    The one selected policy's name (its ``_target_`` if that is not the ``conf/policy/`` one)
    becomes the scheduler's policy and its other keys its kwargs; the predictor section's
    artifact ``path`` and the SLO spec go along.
    """
    if len(policies) != 1:
        raise ValueError(f"server=openai serves one policy; {len(policies)} selected "
                         f"({', '.join(policies)}): use e.g. policy=augserve")
    (name, pcfg), = policies.items()
    pcfg = dict(pcfg)
    target = pcfg.pop("_target_", None)
    if not target:
        raise ValueError(f"policy {name!r} has no _target_")
    pcfg.pop("predictor", None)
    pcfg.pop("slo", None)
    pcfg.pop("label", None)
    if pcfg.pop("engine", None):
        raise ValueError(f"policy {name!r} sets engine options of its own (`engine:`), which a "
                         "server cannot apply per policy: set them on the server instead")
    # a policy's own fallback artifact (rl_ckpt) stands in when no predictor= is selected
    path = (predictor or {}).get("path") or pcfg.pop("default_predictor", None)
    pcfg.pop("default_predictor", None)
    # the policy's name when it is the conf/policy/ entry (deploy.py reads the same yaml), else
    # its target (an overridden _target_, a policy config of one's own)
    short = name if policy_targets().get(name) == str(target) else str(target)
    return server_command(
        model=str(server["model"]), policy=short, predictor=str(path) if path else None,
        slo=slo, profile=server.get("profile"), policy_kwargs=pcfg or None,
        host=str(server["host"]),
        port=int(server["port"]), max_model_len=server.get("max_model_len"),
        max_num_seqs=int(server["max_num_seqs"]),
        max_num_batched_tokens=int(server["max_num_batched_tokens"]),
        kv_cache_gib=float(server["kv_cache_gib"]),
        async_scheduler=bool(server["async_scheduling"]), extra=list(server.get("extra") or []),
        trace=server.get("trace"))


def exec_server(cmd: list[str]) -> None:
    """Replace this process with the server (callers check ``require_vllm()`` first)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.execv(cmd[0], cmd)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m augserve.vllm.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="data/models/tiny_llama")
    p.add_argument("--policy", default="vllm")
    p.add_argument("--predictor", default=None, help="artifact dir, or 'hints'")
    p.add_argument("--slo", default=None)
    p.add_argument("--profile", default=None)
    p.add_argument("--trace", default=None, help="JSONL file of what the policy sees")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--kv-cache-gib", type=float, default=0.25)
    p.add_argument("--sync", action="store_true", help="AugServeScheduler, no async scheduling")
    p.add_argument("--print", action="store_true", help="print the command instead of running")
    a = p.parse_args(argv)
    try:
        require_vllm()
    except VLLMNotInstalled as e:
        print(f"augserve.vllm.server: {e}", file=sys.stderr)
        return 2
    cmd = server_command(a.model, a.policy, a.predictor, a.slo, a.profile, None, a.host, a.port,
                         32, a.max_model_len, a.max_num_seqs, a.max_num_batched_tokens,
                         a.kv_cache_gib, not a.sync, extra, a.trace)
    if a.print:
        print(shlex.join(cmd))
        return 0
    exec_server(cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
