"""Synthetic MoE routing traces, and fitting their parameters to real traces.

>>> from moesim.trace.synthetic import SynthParams, generate, fit
>>> params = SynthParams(num_experts=32, top_k=4, num_layers=24, tokens_per_sequence=512,
...                      num_sequences=8, popularity_skew=0.5, persistence=0.3, cross_layer=0.3)
>>> trace = generate(params)
>>> result = fit(real_trace)                       # parameters + observed-vs-synthetic diagnostics
>>> generate(result.params.rescaled(num_experts=128, top_k=16))   # the same process, finer experts

Modules: ``params`` (SynthParams, popularity curve), ``generator`` (generate), ``stats`` (the
statistics compared), ``fitting`` (fit). Importing this package compiles nothing; the Numba
kernels (``moesim.kernels.synthetic``) load on the first call.
"""

from moesim.trace.synthetic.fitting import FitDiagnostic, FitResult, fit, params_from_document
from moesim.trace.synthetic.generator import cross_layer_map, generate, layer_popularity
from moesim.trace.synthetic.params import SynthParams, rank_popularity
from moesim.trace.synthetic.stats import RoutingStats, routing_stats

__all__ = [
    "FitDiagnostic",
    "FitResult",
    "RoutingStats",
    "SynthParams",
    "cross_layer_map",
    "fit",
    "generate",
    "layer_popularity",
    "params_from_document",
    "rank_popularity",
    "routing_stats",
]
