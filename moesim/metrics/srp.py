"""Segment routing best performance (SRP) of a routing trace, with bootstrap intervals.

SRP asks how well the best router that must treat ``m`` consecutive tokens alike ("segment
router") can reproduce the real routing: a high SRP means experts stay active over segments, so an
expert cache or a segment-level prefetcher can work. See Liang et al. (2025) and the spec
``specs/lrc-metrics.md`` sections 2 and 10 for the exact semantics reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import ConfigError
from moesim.metrics import bootstrap
from moesim.metrics._checks import _check_layer, _check_trace
from moesim.metrics.baseline import _check_segment, bernoulli_srp, iid_srp
from moesim.trace.trace import Trace

LEVELS = ("layer", "model")
_EXACT_FLOAT_LIMIT = 2**53


@dataclass(frozen=True)
class _Scan:
    """Threshold scan of pooled histograms ``[..., m + 1]``: every field has the leading shape."""

    f1_by_alpha: np.ndarray
    srp: np.ndarray
    alpha: np.ndarray
    tp: np.ndarray
    pred: np.ndarray
    act: np.ndarray


def _scan(hist: np.ndarray) -> _Scan:
    """F1 of every threshold rule "active iff f >= alpha" on pooled counts, and the best one."""
    segment = hist.shape[-1] - 1
    f = np.arange(segment + 1, dtype=hist.dtype)
    tp_by_alpha = np.cumsum((hist * f)[..., ::-1], axis=-1)[..., ::-1]
    pred_by_alpha = segment * np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
    act = tp_by_alpha[..., :1]
    # max(., 1): with no activations every F1 is 0 and alpha* = 0, as in the reference.
    f1 = 2.0 * tp_by_alpha / np.maximum(pred_by_alpha + act, 1)
    alpha = np.argmax(f1, axis=-1)
    pick = alpha[..., None]
    return _Scan(
        f1_by_alpha=f1,
        srp=np.take_along_axis(f1, pick, -1)[..., 0],
        alpha=alpha,
        tp=np.take_along_axis(tp_by_alpha, pick, -1)[..., 0],
        pred=np.take_along_axis(pred_by_alpha, pick, -1)[..., 0],
        act=act[..., 0],
    )


def _resampled(hist_by_seq: np.ndarray, num_boot: int, seed: int) -> np.ndarray:
    """``[num_boot, ...]`` pooled histograms of sequence resamples (one matrix product)."""
    num_sequences = hist_by_seq.shape[0]
    weights = bootstrap.resample_counts(num_sequences, num_boot, seed)
    flat = hist_by_seq.reshape(num_sequences, int(np.prod(hist_by_seq.shape[1:])))
    largest = int(flat.sum(axis=1).max()) if flat.size else 0
    if num_sequences * largest < _EXACT_FLOAT_LIMIT:
        # Integer-valued float64 products and sums are exact below 2**53, and BLAS is ~50x faster.
        pooled = (weights.astype(np.float64) @ flat.astype(np.float64)).astype(np.int64)
    else:
        pooled = weights @ flat
    return pooled.reshape((num_boot,) + hist_by_seq.shape[1:])


@dataclass(frozen=True)
class SRPResult:
    """SRP of one group of experts (one layer, or all layers of a trace) at one segment length.

    Attributes
    ----------
    srp : float
        Segment routing best performance: the best F1 of a segment router, in [0, 1].
    alpha : int
        Optimal threshold (smallest on ties): the router predicts "active for the whole window"
        iff the expert is active at >= alpha of its m tokens.
    rho_hat : float
        ``pred / act``: experts the best segment router switches on per window relative to the
        active ones (the segment routing size ratio; 0 with no activations).
    act_r : float
        ``act / pred(alpha=0)``: activation rate, k/E for a full top-k trace (NaN with no windows).
    tp, pred, act : int
        Pooled counts at ``alpha``: true positives, predicted (TP + FP) and actual (TP + FN)
        activations, summed over windows, sequences and the experts of the group.
    f1_by_alpha : float64 ndarray ``[segment + 1]``
        F1 of every threshold.
    baseline : float
        SRP of an i.i.d. uniform top-k router with the same E, k and m (:func:`iid_srp`).
    lift : float
        ``srp - baseline``: routing locality beyond what chance gives.
    segment : int
        Segment length m in tokens.
    level : str
        ``"layer"`` or ``"model"``.
    layer : int or None
        Trace layer index at layer level; None at model level.
    num_windows : int
        Windows (stride 1, inside one sequence) per expert, over all sequences.
    hist_by_seq : int64 ndarray ``[S, segment + 1]``
        Per sequence, number of (window, expert) pairs with window count f; what the bootstrap
        resamples.
    """

    srp: float
    alpha: int
    rho_hat: float
    act_r: float
    tp: int
    pred: int
    act: int
    f1_by_alpha: np.ndarray
    baseline: float
    lift: float
    segment: int
    level: str
    layer: int | None
    num_windows: int
    hist_by_seq: np.ndarray = field(repr=False)

    @property
    def num_sequences(self) -> int:
        return int(self.hist_by_seq.shape[0])

    def bootstrap_srp(self, num_boot: int = 1000, seed: int = 0) -> np.ndarray:
        """float64 ``[num_boot]``: SRP re-maximised on sequence resamples (alpha re-chosen in each).

        The same ``seed`` draws the same resamples for every result of the same trace, so
        replicates of several layers can be combined (e.g. averaged) into a joint bootstrap.
        """
        bootstrap.check_ci(0.95, num_boot)  # validates num_boot; the level is irrelevant here
        return _scan(_resampled(self.hist_by_seq, num_boot, seed)).srp

    def confidence_interval(self, ci: float = 0.95, num_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
        """Basic bootstrap interval of :attr:`srp` over sequences, as in Liang et al. (2025).

        Subtract :attr:`baseline` from both bounds for an interval of :attr:`lift`.
        """
        bootstrap.check_ci(ci, num_boot)
        low, high = bootstrap.basic_interval(self.srp, self.bootstrap_srp(num_boot, seed), ci)
        return float(low), float(high)


def window_histograms(trace: Trace, segment: int, *, by: str = "layer", per_sequence: bool = True) -> np.ndarray:
    """Window-count histograms of a trace: how many windows have count f = 0..m, per group.

    Parameters
    ----------
    trace : Trace
    segment : int
        Window length m >= 1; windows are stride 1 and never cross a sequence boundary.
    by : {"layer", "expert"}
        Group experts per layer (``[..., L, m + 1]``) or keep each expert (``[..., L, E, m + 1]``).
    per_sequence : bool
        Keep a leading sequence axis ``S`` (for the bootstrap) or sum over sequences.

    Returns
    -------
    int64 ndarray
    """
    from moesim.kernels.srp import window_count_histograms

    trace = _check_trace(trace)
    segment = _check_segment(segment)
    if by not in ("layer", "expert"):
        raise ConfigError(f"by: expected 'layer' or 'expert', got {by!r}")
    num_sequences, num_layers, num_experts = trace.num_sequences, trace.num_layers, trace.num_experts
    keys = np.arange(num_layers * num_experts, dtype=np.int64)
    col_of_key = keys // num_experts if by == "layer" else keys
    num_cols = num_layers if by == "layer" else num_layers * num_experts
    row_of_seq = np.arange(num_sequences, dtype=np.int64) if per_sequence else np.zeros(num_sequences, np.int64)
    num_rows = num_sequences if per_sequence else 1
    hist = window_count_histograms(
        trace.experts,
        np.ascontiguousarray(trace.seq_offsets, dtype=np.int64),
        num_experts,
        segment,
        row_of_seq,
        col_of_key,
        num_rows,
        num_cols,
    )
    if by == "expert":
        hist = hist.reshape(num_rows, num_layers, num_experts, segment + 1)
    return hist if per_sequence else hist[0]


def _result(trace: Trace, hist_by_seq: np.ndarray, level: str, layer: int | None) -> SRPResult:
    """Point estimate from per-sequence histograms ``[S, m + 1]`` of one group of ``trace``."""
    segment = hist_by_seq.shape[-1] - 1
    scan = _scan(hist_by_seq.sum(axis=0))
    act, tp, pred = int(scan.act), int(scan.tp), int(scan.pred)
    pred_all = int(segment * hist_by_seq.sum())
    srp_value = float(scan.srp)
    baseline = iid_srp(trace.num_experts, trace.top_k, segment).srp
    num_keys = trace.num_experts * (1 if level == "layer" else trace.num_layers)
    hist_by_seq = hist_by_seq.copy()
    hist_by_seq.flags.writeable = False
    f1 = scan.f1_by_alpha.copy()
    f1.flags.writeable = False
    return SRPResult(
        srp=srp_value,
        alpha=int(scan.alpha),
        rho_hat=pred / act if act else 0.0,
        act_r=act / pred_all if pred_all else float("nan"),
        tp=tp,
        pred=pred,
        act=act,
        f1_by_alpha=f1,
        baseline=baseline,
        lift=srp_value - baseline,
        segment=segment,
        level=level,
        layer=layer,
        num_windows=int(hist_by_seq.sum()) // num_keys,
        hist_by_seq=hist_by_seq,
    )


def srp(trace: Trace, segment: int, *, level: str = "layer", layer: int | None = None) -> SRPResult:
    """Segment routing best performance of one layer or of the whole trace.

    Parameters
    ----------
    trace : Trace
        Routing trace; select layers, sequences or a phase first with :meth:`Trace.select`.
    segment : int
        Segment length m in tokens (any m >= 1, not only powers of two).
    level : {"layer", "model"}
        ``"layer"``: the experts of one layer share one threshold. ``"model"``: all experts of all
        layers of the trace share one threshold (counts pooled over layers before maximising).
    layer : int, optional
        Trace layer index (0..L-1) at layer level; may be omitted for a one-layer trace.
        Use :func:`srp_by_layer` for every layer at once.

    Returns
    -------
    SRPResult

    Raises
    ------
    ConfigError
        For a bad segment, level or layer.

    Notes
    -----
    Liang et al., "Not All Models Suit Expert Offloading: On Local Routing Consistency of
    Mixture-of-Expert Models", arXiv:2505.16056 (2025), App. C.1, Eq. 3-6. Every stride-1 window
    of m tokens inside a sequence (sequences shorter than m have none) and every expert is one
    binary task; confusion counts are pooled over windows, sequences and experts, and the best
    segment router is a threshold on the window count f (their App. C.3), so
    ``SRP = max_alpha 2 TP(alpha) / (PRED(alpha) + ACT)``. With no windows at all SRP is 0,
    alpha 0, rho_hat 0 and act_r NaN, as in the reference code.
    """
    trace = _check_trace(trace)
    segment = _check_segment(segment)
    if level not in LEVELS:
        raise ConfigError(f"level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if level == "model":
        if layer is not None:
            raise ConfigError(
                "layer: model-level SRP pools all layers of the trace; to pool a subset, "
                "pass trace.select(layers=[...]) and leave layer unset"
            )
        return _result(trace, window_histograms(trace, segment).sum(axis=1), "model", None)
    if layer is None:
        if trace.num_layers != 1:
            raise ConfigError(
                f"layer: the trace has {trace.num_layers} MoE layers; pass layer=0..{trace.num_layers - 1}, "
                f"use srp_by_layer(...) for all of them, or level='model' to pool them"
            )
        layer = 0
    layer = _check_layer(trace, layer)
    return _result(trace, window_histograms(trace.select(layers=[layer]), segment)[:, 0], "layer", layer)


def srp_by_layer(trace: Trace, segment: int, *, layers: list[int] | None = None) -> tuple[SRPResult, ...]:
    """Layer-level SRP of every (or each listed) trace layer, from one pass over the trace.

    Parameters
    ----------
    trace : Trace
    segment : int
        Segment length m >= 1.
    layers : list of int, optional
        Trace layer indices (default: all), in the order wanted.

    Returns
    -------
    tuple of SRPResult
        One per layer, each with its own threshold; :func:`mean_srp` summarises them.

    Notes
    -----
    Same definition as :func:`srp` (Liang et al. 2025, App. C.1) at their layer level ``l*``.
    """
    trace = _check_trace(trace)
    segment = _check_segment(segment)
    layers = list(range(trace.num_layers)) if layers is None else [_check_layer(trace, x) for x in layers]
    hist = window_histograms(trace, segment)
    return tuple(_result(trace, hist[:, layer], "layer", layer) for layer in layers)


@dataclass(frozen=True)
class MeanSRP:
    """Unweighted mean over layers of layer-level SRP (each layer with its own threshold).

    ``ci_low``/``ci_high`` come from a joint bootstrap: the same sequence resamples for every layer,
    the mean re-taken in each (NaN when no interval was asked for).
    """

    srp: float
    baseline: float
    lift: float
    rho_hat: float
    layers: tuple[int, ...]
    ci_low: float = float("nan")
    ci_high: float = float("nan")


def mean_srp(
    results: tuple[SRPResult, ...] | list[SRPResult],
    *,
    ci: float | None = None,
    num_boot: int = 1000,
    seed: int = 0,
) -> MeanSRP:
    """Mean of layer-level SRPs of one trace, with a joint bootstrap interval when ``ci`` is set.

    Parameters
    ----------
    results : sequence of SRPResult
        Layer-level results of one trace at one segment length (e.g. from :func:`srp_by_layer`).
    ci : float, optional
        Confidence level in (0, 1); None (default) skips the bootstrap.
    num_boot : int
        Sequence resamples.
    seed : int
        Resampling seed; the same resamples reweight every layer.

    Returns
    -------
    MeanSRP

    Notes
    -----
    The basic bootstrap of Liang et al. (2025) applied to the mean: in each resample every layer's
    threshold is re-chosen and the mean re-taken, so the interval accounts for the correlation
    between layers (they see the same tokens), unlike a mean of per-layer intervals.
    """
    results = list(results)
    if not results:
        raise ConfigError("results: expected at least one SRPResult")
    shapes = {(r.segment, r.num_sequences) for r in results}
    if len(shapes) != 1:
        raise ConfigError("results: layer SRPs to average must share the trace and the segment length")
    point = float(np.mean([r.srp for r in results]))
    baseline = float(np.mean([r.baseline for r in results]))
    low = high = float("nan")
    if ci is not None:
        bootstrap.check_ci(ci, num_boot)
        hist = np.stack([r.hist_by_seq for r in results], axis=1)
        replicates = _scan(_resampled(hist, num_boot, seed)).srp.mean(axis=1)
        low, high = (float(x) for x in bootstrap.basic_interval(point, replicates, ci))
    return MeanSRP(
        srp=point,
        baseline=baseline,
        lift=point - baseline,
        rho_hat=float(np.mean([r.rho_hat for r in results])),
        layers=tuple(r.layer for r in results),
        ci_low=low,
        ci_high=high,
    )


@dataclass(frozen=True)
class ExpertSRP:
    """Expert-level SRP: every expert of every layer with its own threshold (arrays ``[L, E]``).

    ``baseline`` is each expert's i.i.d. null at its own activation rate (:func:`bernoulli_srp`), so
    ``lift`` isolates temporal locality from how often the expert is used.
    """

    srp: np.ndarray
    alpha: np.ndarray
    rho_hat: np.ndarray
    act_r: np.ndarray
    baseline: np.ndarray
    lift: np.ndarray
    segment: int
    layers: tuple[int, ...]


def srp_by_expert(trace: Trace, segment: int) -> ExpertSRP:
    """SRP of each expert on its own (the reference's expert level ``e*``).

    Parameters
    ----------
    trace : Trace
    segment : int
        Segment length m >= 1.

    Returns
    -------
    ExpertSRP
        Never-activated experts have SRP 0, alpha 0, rho_hat 0 and act_r 0.

    Notes
    -----
    Liang et al. (2025) App. C.1 with the confusion counts of one expert only; their Fig. 14 plots
    these against the lower bound ``2r/(1+r)`` of the expert's activation frequency r.
    """
    trace = _check_trace(trace)
    segment = _check_segment(segment)
    hist = window_histograms(trace, segment, by="expert", per_sequence=False)
    scan = _scan(hist)
    pred_all = segment * hist.sum(axis=-1)
    act = scan.act.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        act_r = np.where(pred_all > 0, act / np.maximum(pred_all, 1), np.nan)
        rho_hat = np.where(act > 0, scan.pred / np.maximum(act, 1), 0.0)
    baseline = np.array(
        [[bernoulli_srp(r, segment).srp if r == r else 0.0 for r in row] for row in act_r], dtype=np.float64
    ).reshape(act_r.shape)
    arrays = dict(
        srp=scan.srp, alpha=scan.alpha.astype(np.int64), rho_hat=rho_hat, act_r=act_r,
        baseline=baseline, lift=scan.srp - baseline,
    )
    for value in arrays.values():
        value.flags.writeable = False
    return ExpertSRP(**arrays, segment=segment, layers=tuple(range(trace.num_layers)))
