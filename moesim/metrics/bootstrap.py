"""Bootstrap over sequences, as the paper does (Liang et al. 2025, 30_srp_calc.py).

Resamples are multinomial counts per sequence (``bs_w``): a statistic that is a weighted sum over
sequences is recomputed for every resample with one matrix product. Intervals are the "basic"
bootstrap ``[2θ - q_hi, 2θ - q_lo]``.
"""

from __future__ import annotations

import warnings

import numpy as np

from moesim.errors import ConfigError


def check_ci(ci: float, num_boot: int) -> None:
    if not (isinstance(ci, (int, float)) and 0 < ci < 1):
        raise ConfigError(f"ci: expected a confidence level in (0, 1) such as 0.95, got {ci!r}")
    if isinstance(num_boot, bool) or not isinstance(num_boot, (int, np.integer)) or num_boot < 2:
        raise ConfigError(f"num_boot: expected an integer >= 2 such as 1000, got {num_boot!r}")


def resample_counts(num_sequences: int, num_boot: int, seed: int) -> np.ndarray:
    """int64 ``[num_boot, num_sequences]``: how often each sequence is drawn in each resample."""
    rng = np.random.default_rng(seed)
    if num_sequences == 0:
        return np.zeros((num_boot, 0), dtype=np.int64)
    probs = np.full(num_sequences, 1.0 / num_sequences)
    return rng.multinomial(num_sequences, probs, size=num_boot).astype(np.int64)


def basic_interval(point: np.ndarray, replicates: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Basic bootstrap interval of ``point`` from ``replicates`` (resamples on axis 0).

    NaN replicates (e.g. a resample with no data) are ignored; all-NaN gives NaN bounds.
    """
    alpha = (1.0 - ci) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        q_lo = np.nanquantile(replicates, alpha, axis=0)
        q_hi = np.nanquantile(replicates, 1.0 - alpha, axis=0)
    return 2.0 * point - q_hi, 2.0 * point - q_lo
