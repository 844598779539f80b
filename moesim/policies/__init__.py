"""Pluggable policies, one registry per family (DESIGN section 5).

:class:`~moesim.policies.registry.Registry` is the shared mechanism: a family module creates one
and registers its members with a decorator; unknown names raise a ConfigError listing valid names.
"""

from moesim.policies.registry import Registry

__all__ = ["Registry"]
