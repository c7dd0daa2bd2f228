"""Hint validation at vLLM's API server: bad ``vllm_xargs`` get a 400 before the engine sees them.

Route: vLLM 0.32 runs every custom logits processor's ``validate_params(sampling_params)`` in the
frontend's ``InputProcessor`` for each request, before it is sent to the EngineCore, and turns a
``VLLMValidationError`` into the same HTTP 400 as a bad sampling parameter (``{"error":
{"message", "type": "BadRequestError", "param", "code": 400}}``). That hook covers every entry
point (``/v1/completions``, ``/v1/chat/completions``, ``/v1/responses``, the Python ``LLM`` API)
with stock vLLM; an ASGI ``--middleware`` would see only HTTP bodies, parse each twice and have
to imitate vLLM's error format. :class:`HintValidator` changes no logits: it is
argmax-invariant, declines every request (V2 runner) and returns the logits it gets.

``python -m augserve.vllm.server`` adds ``--logits-processors`` :data:`HINT_VALIDATOR`.
Rejections are counted in the Prometheus counter ``augserve:hints_rejected_total{field}`` on the
server's ``/metrics``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)

from augserve.vllm.hints import FIELDS, HINT_VALIDATOR, HintError, check_hints

__all__ = ["HINT_VALIDATOR", "HINTS_REJECTED", "HintValidator"]

HINTS_REJECTED = Counter(
    "augserve:hints_rejected", "Requests refused with HTTP 400 for a malformed augserve hint",
    ["field"])


class HintValidator(V1LogitsProcessor, V2LogitsProcessor):
    """Checks :data:`augserve.vllm.hints.SCHEMA` per request; a no-op on logits.

    Subclasses both of vLLM's logits-processor interfaces so that either model runner (V1 on
    CPU, V2 where Triton is available) loads it.
    """

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        try:
            check_hints(sampling_params.extra_args, now_s=time.time())
        except HintError as e:
            HINTS_REJECTED.labels(field=e.key if e.key in FIELDS else "other").inc()
            raise VLLMValidationError(str(e), parameter=f"vllm_xargs.{e.where}") from None
        except Exception as e:  # noqa: BLE001 - a shape the schema did not foresee: still a 400
            HINTS_REJECTED.labels(field="other").inc()
            raise VLLMValidationError(f"vllm_xargs: unreadable ({type(e).__name__})",
                                      parameter="vllm_xargs") from None

    # -- the logits side: nothing to do ----------------------------------------------------
    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: Any) -> None:
        pass

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        return False

    def apply(self, logits: Any, ctx: Any = None) -> Any:
        return logits
