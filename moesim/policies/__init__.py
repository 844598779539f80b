"""Pluggable policies, one registry per family (DESIGN section 5).

:class:`~moesim.policies.registry.Registry` is the shared mechanism: a family module creates one
and registers its members with a decorator; unknown names raise a ConfigError listing valid names.
Eviction (:mod:`moesim.policies.eviction`): ``EVICTION`` with "lru", "fifo", "lfu", "belady",
"sch", and :class:`ExpertCache`, the step-form cache the simulator drives.
"""

from moesim.policies.eviction import (
    EVICTION,
    EvictionPolicy,
    ExpertCache,
    NoParams,
    SCHParams,
    make_policy,
    register_eviction,
)
from moesim.policies.registry import Registry

__all__ = [
    "EVICTION",
    "EvictionPolicy",
    "ExpertCache",
    "NoParams",
    "Registry",
    "SCHParams",
    "make_policy",
    "register_eviction",
]
