"""A workload that samples scripts from a source and stamps them with arrival times."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from augserve.request import AugRequest
from augserve.workload.base import ArrivalProcess, ScriptSource, Workload
from augserve.workload.errors import WorkloadError


class SampledWorkload(Workload):
    """``source`` scripts at ``arrivals`` times over ``duration_s`` seconds.

    For a seed: ``rng = np.random.default_rng(seed)``; arrival times first, then one script per
    arrival (so the arrival sequence of a seed does not depend on the source). Request ids are
    opaque, ``f"{i}"`` with ``i`` the arrival index (a policy sees the id: it must not name the
    script); the script's own id is kept in ``metadata["script_rid"]``, which views do not
    expose (:data:`augserve.contract.VIEW_METADATA`). ``max_requests`` keeps the first
    arrivals only. With ``max_model_len`` every script is cut with
    :meth:`AugRequest.fit_context`; a prompt that does not fit raises :class:`WorkloadError`.
    """

    def __init__(
        self,
        source: ScriptSource,
        arrivals: ArrivalProcess,
        duration_s: float,
        max_model_len: int | None = None,
        max_requests: int | None = None,
    ) -> None:
        if not duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        if max_model_len is not None and max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {max_model_len}")
        if max_requests is not None and max_requests < 0:
            raise ValueError(f"max_requests must be >= 0, got {max_requests}")
        self.source = source
        self.arrivals = arrivals
        self.duration_s = float(duration_s)
        self.max_model_len = max_model_len
        self.max_requests = max_requests

    def requests(self, seed: int) -> list[AugRequest]:
        rng = np.random.default_rng(seed)
        times = np.sort(np.asarray(self.arrivals.times(rng, self.duration_s), dtype=float))
        if self.max_requests is not None:
            times = times[: self.max_requests]
        scripts = self.source.draw(rng, len(times))
        out: list[AugRequest] = []
        for i, (t, s) in enumerate(zip(times, scripts, strict=True)):
            rid = f"{i}"
            meta = dict(s.metadata)
            meta["script_rid"] = s.rid
            r = AugRequest(rid, float(t), s.prompt_tokens, s.segments, s.aug_type, s.prompt_text,
                           MappingProxyType(meta), prefix=s.prefix)
            if self.max_model_len is not None:
                try:
                    r = r.fit_context(self.max_model_len)
                except ValueError as e:
                    raise WorkloadError(str(e), file=getattr(self.source, "path", None),
                                        field="prompt_tokens",
                                        where=f"request '{rid}' (script '{s.rid}')") from None
            out.append(r)
        return out
