"""Scheduling policies behind one interface (:class:`augserve.sched.base.Policy`)."""

from augserve.sched.base import Policy
from augserve.sched.infercept import InferCeptPolicy
from augserve.sched.keyed import KeyedPolicy
from augserve.sched.oracle import OraclePolicy
from augserve.sched.vllm import VLLMPolicy

__all__ = ["Policy", "KeyedPolicy", "VLLMPolicy", "InferCeptPolicy", "OraclePolicy"]
