"""Trace metrics: hit-rate curves for every cache size, SRP/SCH (Liang et al. 2025), bootstrap CIs.

Importing this package does not import numba; kernels compile on first use.
"""

from moesim.metrics.baseline import SRPBaseline, bernoulli_srp, iid_srp
from moesim.metrics.hit_curve import HitCurve, RequestStream, hit_counts, hit_curve
from moesim.metrics.srp import (
    ExpertSRP,
    MeanSRP,
    SRPResult,
    mean_srp,
    srp,
    srp_by_expert,
    srp_by_layer,
    window_histograms,
)

__all__ = [
    "ExpertSRP",
    "HitCurve",
    "MeanSRP",
    "RequestStream",
    "SRPBaseline",
    "SRPResult",
    "bernoulli_srp",
    "hit_counts",
    "hit_curve",
    "iid_srp",
    "mean_srp",
    "srp",
    "srp_by_expert",
    "srp_by_layer",
    "window_histograms",
]
