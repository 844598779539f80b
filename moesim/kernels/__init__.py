"""Numba kernels: fixed dtypes, arrays and scalars in, arrays out, no validation (DESIGN section 4).

Nothing here is imported by ``import moesim``; public wrappers in :mod:`moesim.metrics` (and the
simulator) import the module they need inside the function that needs it, so numba loads and
compiles (or reads its on-disk cache) only on first use. Every kernel has a plain-Python twin of
the same name in ``tests/naive/<topic>.py``.

Modules: ``cache_common`` (codes, priorities and the future shared by the cache kernels),
``cache_stack`` (one-pass hit counts for every cache size: priority stacks and LRU stack
distances), ``cache_sim`` (single-size simulation and FIFO curves), ``srp`` (window-count
histograms), ``synthetic`` (trace generator).
"""
