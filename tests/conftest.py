"""Session checks shared by all tests."""

from __future__ import annotations

import importlib.util
import os

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    # `make test` installs the vllm extra and sets this, so the live-vLLM tests cannot turn into
    # silent skips there; a plain `pytest` without the extra still skips them
    if os.environ.get("AUGSERVE_REQUIRE_VLLM") != "1":
        return
    if importlib.util.find_spec("vllm") is None:
        raise pytest.UsageError("AUGSERVE_REQUIRE_VLLM=1 but vLLM is not installed: "
                                "install the extra (make test does: pip install -e '.[vllm]')")
    try:  # installed but broken (e.g. a torchvision that does not match CPU torch) fails too
        importlib.import_module("vllm")
    except Exception as e:  # noqa: BLE001 - any import failure is the message
        raise pytest.UsageError(f"AUGSERVE_REQUIRE_VLLM=1 but `import vllm` fails: {e!r}") from e
