"""`fit`: estimate :class:`SynthParams` from a real trace, and say how well they reproduce it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from moesim.errors import ConfigError, TraceError
from moesim.trace.schema import PHASES
from moesim.trace.stats import expert_popularity, previous_token_reuse
from moesim.trace.synthetic.generator import draw_experts
from moesim.trace.synthetic.params import SynthParams, rank_popularity
from moesim.trace.synthetic.stats import (
    DEFAULT_WINDOW_TOKENS,
    RoutingStats,
    cross_layer_predictability,
    json_ready,
    nanmean,
    routing_stats,
    sequence_entropy,
    top_k_share,
)
from moesim.trace.trace import Trace

FIT_FORMAT = "moesim.synthetic.fit"
FIT_FORMAT_VERSION = 1
METHOD = "simulated method of moments"
MAX_SKEW = 0.99
# Random stream of the sequence subsample (rankings use stream 0, sequences 1..S).
_SUBSAMPLE_STREAM = 2**64 - 1
# Parameter -> the moment that pins it, each oriented to increase with its parameter.
_MOMENTS = {
    "popularity_skew": "top_k_share",
    "popularity_tail": "load_entropy",  # negated: entropy falls as the tail thins
    "sequence_affinity": "sequence_entropy",  # negated
    "persistence": "reuse_prev",
    "cross_layer": "cross_layer",
}
_NAMES = tuple(_MOMENTS)
# Solver: parameters to 1e-3, moments to 1e-4 (below their sampling error on fitted sample sizes).
_PARAM_TOL = 1e-3
_MOMENT_TOL = 1e-4
# A fitted moment further than this (and than twice its seed-to-seed spread) from its target is
# reported as not matched.
_REPORT_TOL = 2e-3
# Synthetic draws (seeds seed, seed + 1, ...) behind the diagnostics' spread.
_REPLICATES = 3
_FIRST_STEP = 0.02
_MAX_SOLVE_STEPS = 12
# Beyond this the per-sequence entropy stops falling (k distinct experts per token spread a
# one-expert sequence again), so the moment no longer identifies the affinity.
MAX_AFFINITY = 0.6
# Searched range of popularity_tail (its documented range, up to 100, is for hand-made params).
MAX_TAIL_FIT = 20.0
_MAX_NEWTON_STEPS = 12
# Newton ending further than this from a target restarts from one-parameter root finding.
_RESTART_TOL = 1e-3
_MAX_NEWTON_MOVE = 0.2


@dataclasses.dataclass(frozen=True)
class FitDiagnostic:
    """One row of the observed-vs-synthetic table.

    ``fitted`` rows are moments the fit matched (their agreement shows the solver converged);
    the others are out-of-sample checks of what the model reproduces without being told.
    ``synthetic_sd`` is the spread of the synthetic value over draws with other seeds (NaN for
    per-layer rows): differences within about twice it are sampling noise.
    """

    statistic: str
    layer: int | None
    observed: float
    synthetic: float
    fitted: bool
    synthetic_sd: float = math.nan

    @property
    def difference(self) -> float:
        return self.synthetic - self.observed

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "difference": self.difference}


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """Fitted parameters and how well a synthetic trace made from them matches the real one.

    ``observed`` and ``synthetic`` are computed on traces of identical shape: the real trace's
    fitted phase, subsampled to ``num_tokens_used`` tokens in ``num_sequences_used`` whole
    sequences, and a synthetic trace drawn from ``params`` with exactly those sequence lengths.
    ``fitted_moments`` names the statistics the fit matched; ``synthetic_sd`` holds, for each
    whole-trace statistic, its standard deviation over synthetic draws with ``_REPLICATES``
    seeds; ``notes`` says which parameters could not be identified and which moments were not
    matched beyond that noise.
    """

    params: SynthParams
    observed: RoutingStats
    synthetic: RoutingStats
    phase: str
    num_tokens_used: int
    num_sequences_used: int
    fitted_moments: tuple[str, ...]
    synthetic_sd: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    method: str = METHOD

    def diagnostics(self, *, per_layer: bool = False) -> tuple[FitDiagnostic, ...]:
        """Whole-trace rows (layer ``None``: layer means, LRU hit rates), then per-layer rows."""
        observed, synthetic = self.observed.summary(), self.synthetic.summary()
        rows = [
            FitDiagnostic(
                name, None, observed[name], synthetic[name], name in self.fitted_moments,
                self.synthetic_sd.get(name, math.nan),
            )
            for name in observed
        ]
        if per_layer:
            for name, attr in (
                ("load_entropy", "load_entropy"),
                ("sequence_entropy", "sequence_entropy"),
                ("top_k_share", "top_k_share"),
                ("reuse_prev", "reuse_prev"),
                (f"reuse_window{self.observed.window_tokens}", "reuse_window"),
                ("cross_layer", "cross_layer"),
            ):
                obs, syn = getattr(self.observed, attr), getattr(self.synthetic, attr)
                first = 1 if name == "cross_layer" else 0
                for layer in range(first, self.observed.num_layers):
                    rows.append(FitDiagnostic(name, layer, float(obs[layer]), float(syn[layer]), False))
        return tuple(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready document (NaN as None); :func:`params_from_document` reads the parameters back."""
        return json_ready({
            "format": FIT_FORMAT,
            "format_version": FIT_FORMAT_VERSION,
            "method": self.method,
            "params": self.params.to_dict(),
            "phase": self.phase,
            "num_tokens_used": self.num_tokens_used,
            "num_sequences_used": self.num_sequences_used,
            "fitted_moments": list(self.fitted_moments),
            "synthetic_sd": dict(self.synthetic_sd),
            "notes": list(self.notes),
            "diagnostics": [row.to_dict() for row in self.diagnostics(per_layer=True)],
            "observed": self.observed.to_dict(),
            "synthetic": self.synthetic.to_dict(),
        })


def params_from_document(document: object, *, where: str = "fit") -> SynthParams:
    """The parameters of a :meth:`FitResult.to_dict` document, or of a bare ``SynthParams`` mapping."""
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: expected a JSON object with a 'params' entry, got {type(document).__name__}")
    if "params" not in document:
        return SynthParams.from_dict(document, where=where)
    if document.get("format", FIT_FORMAT) != FIT_FORMAT or document.get("format_version", 1) != FIT_FORMAT_VERSION:
        raise ConfigError(
            f"{where}: format {document.get('format')!r} version {document.get('format_version')!r} is not "
            f"{FIT_FORMAT!r} version {FIT_FORMAT_VERSION}; re-create it with `moesim trace fit`"
        )
    return SynthParams.from_dict(document["params"], where=f"{where}.params")


# ---------------------------------------------------------------------- sample and moments
def _select_phase(trace: Trace, phase: str | None) -> tuple[Trace, str]:
    counts = trace.phase_counts()
    if phase is None:
        phase = "decode" if counts["decode"] else "prefill"
    elif phase not in PHASES:
        raise ConfigError(f"phase: expected one of {', '.join(PHASES)}, or None for decode when present; got {phase!r}")
    if counts[phase] == 0:
        other = "prefill" if phase == "decode" else "decode"
        raise TraceError(f"trace: has no {phase} tokens to fit (tokens by phase: {counts}); fit phase {other!r}")
    selected = trace if counts[phase] == trace.num_tokens else trace.select(phase=phase)
    return selected, phase


def _subsample(trace: Trace, max_tokens: int, seed: int) -> Trace:
    """Whole sequences in seeded random order until ``max_tokens`` (the last one cut), kept in trace order."""
    from moesim.kernels.synthetic import stream_bits

    if trace.num_tokens <= max_tokens:
        return trace
    offsets = trace.seq_offsets
    bits = stream_bits(np.uint64(seed), np.uint64(_SUBSAMPLE_STREAM), trace.num_sequences)
    order = np.argsort(bits, kind="stable")
    taken = np.minimum(np.cumsum(np.diff(offsets)[order]), max_tokens)
    keep = np.diff(taken, prepend=0)  # tokens kept from each sequence, in the random order
    chosen, kept = order[keep > 0], keep[keep > 0]
    by_position = np.argsort(chosen, kind="stable")
    rows = np.concatenate(
        [np.arange(offsets[s], offsets[s] + n) for s, n in zip(chosen[by_position], kept[by_position])]
    )
    return trace.take(rows)


def _like(sample: Trace, params: SynthParams) -> Trace:
    """A synthetic trace from ``params`` with exactly the sequence lengths of ``sample``."""
    return Trace.from_arrays(
        draw_experts(params, sample.seq_offsets),
        num_experts=params.num_experts,
        seq_ids=sample.seq_ids,
        phases=params.phase,
    )


def _moments(trace: Trace, names: tuple[str, ...] = _NAMES) -> dict[str, float]:
    """The moment that pins each named parameter, oriented to increase with it (NaN if undefined)."""
    out = {}
    for name in names:
        if name == "popularity_skew":
            out[name] = nanmean(top_k_share(trace))
        elif name == "popularity_tail":
            out[name] = -nanmean(expert_popularity(trace).entropy)
        elif name == "sequence_affinity":
            out[name] = -nanmean(sequence_entropy(trace))
        elif name == "persistence":
            out[name] = previous_token_reuse(trace).overall
        else:
            out[name] = nanmean(cross_layer_predictability(trace)[1:])
    return out


# ---------------------------------------------------------------------- solver
def _upper_bound(name: str, current: dict[str, float]) -> float:
    if name == "popularity_skew":
        return MAX_SKEW
    if name == "popularity_tail":
        return MAX_TAIL_FIT
    if name == "sequence_affinity":
        return MAX_AFFINITY
    other = "cross_layer" if name == "persistence" else "persistence"
    return 1.0 - current[other]  # each slot has one source


def _solve(evaluate: Callable[[float], float], target: float, low: float, high: float, guess: float) -> float:
    """Root of ``evaluate(x) = target`` for an increasing (possibly noisy) function on [low, high].

    Brackets the root by steps doubling away from ``guess``, then regula falsi with the Illinois
    modification. A target beyond the range returns the nearer end.
    """
    x0 = min(max(guess, low), high)
    f0 = evaluate(x0) - target
    if abs(f0) < _MOMENT_TOL or high <= low:
        return x0
    step, direction = _FIRST_STEP, (1.0 if f0 < 0 else -1.0)
    while True:
        x1 = min(max(x0 + direction * step, low), high)
        f1 = evaluate(x1) - target
        if (f1 > 0) != (f0 > 0) or abs(f1) < _MOMENT_TOL:
            break
        if x1 in (low, high):
            return x1
        x0, f0, step = x1, f1, 2 * step
    (a, f_a), (b, f_b) = sorted([(x0, f0), (x1, f1)])
    x, f_x, side = x1, f1, 0
    for _ in range(_MAX_SOLVE_STEPS):
        if abs(f_x) < _MOMENT_TOL or b - a < _PARAM_TOL:
            break
        x = (a * f_b - b * f_a) / (f_b - f_a)
        f_x = evaluate(x) - target
        if (f_x > 0) == (f_b > 0):
            b, f_b = x, f_x
            if side == 1:
                f_a /= 2
            side = 1
        else:
            a, f_a = x, f_x
            if side == -1:
                f_b /= 2
            side = -1
    return float(x)


def _inclusion(probability: np.ndarray, top_k: int) -> np.ndarray:
    """Approximate probabilities that k draws without replacement include each item:
    ``1 - exp(-lam * p)`` with lam set so they sum to k (Poisson approximation of successive
    sampling; it keeps every inclusion below 1, as the k distinct slots do)."""
    if top_k >= len(probability):
        return np.ones_like(probability)
    low, high = 0.0, 1.0
    while (1.0 - np.exp(-high * probability)).sum() < top_k:
        high *= 2.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if (1.0 - np.exp(-middle * probability)).sum() < top_k else (low, middle)
    return 1.0 - np.exp(-high * probability)


def _starting_point(sample: Trace, targets: dict[str, float]) -> dict[str, float]:
    """Rough closed-form guesses that ignore the slot coupling; Newton steps correct them."""
    num_experts, top_k = sample.num_experts, sample.top_k
    # Skew and tail: the rank distribution whose k-of-E inclusion shares come closest to the
    # observed top-k share and entropy.
    best = (math.inf, 0.0, 0.0)
    for skew in np.linspace(0.0, MAX_SKEW, 34):
        for tail in np.concatenate([[0.0], np.geomspace(0.05, MAX_TAIL_FIT, 33)]):
            shares = _inclusion(rank_popularity(float(skew), float(tail), num_experts), top_k) / top_k
            entropy = float(-(shares * np.log(shares)).sum() / np.log(num_experts)) if num_experts > 1 else 1.0
            head = float(shares[:top_k].sum())
            distance = (entropy + targets["popularity_tail"]) ** 2 + (head - targets["popularity_skew"]) ** 2
            if distance < best[0]:
                best = (distance, float(skew), float(tail))
    start = {"popularity_skew": best[1], "popularity_tail": best[2]}
    # Reuse and predictability beyond what popularity alone gives (independent draws).
    frequency = expert_popularity(sample).counts / max(sample.num_tokens, 1)
    chance = {
        "persistence": float(np.mean((frequency**2).sum(axis=1)) / top_k),
        "cross_layer": nanmean(top_k_share(sample)),
    }
    for name, base in chance.items():
        value = targets[name]
        start[name] = min(max((value - base) / (1.0 - base), 0.0), 0.9) if math.isfinite(value) and base < 1 else 0.0
    start["sequence_affinity"] = 0.05
    return _project(start)


def _project(values: dict[str, float]) -> dict[str, float]:
    """Clip into the parameter box and shrink persistence + cross_layer onto <= 1."""
    out = {name: min(max(value, 0.0), 1.0) for name, value in values.items()}
    out["popularity_skew"] = min(out["popularity_skew"], MAX_SKEW)
    out["popularity_tail"] = min(max(values["popularity_tail"], 0.0), MAX_TAIL_FIT)
    out["sequence_affinity"] = min(out["sequence_affinity"], MAX_AFFINITY)
    total = out["persistence"] + out["cross_layer"]
    if total > 1.0:
        out["persistence"] /= total
        out["cross_layer"] = 1.0 - out["persistence"]
    return out


def _newton_move(
    jacobian: np.ndarray, residual: np.ndarray, current: dict[str, float], active: tuple[str, ...]
) -> np.ndarray:
    """Least-squares Newton step; parameters at a bound that the step would push past it are
    held there and the others solve for all the moments (a simple active-set method)."""
    free = np.ones(len(active), dtype=bool)
    move = np.zeros(len(active))
    while free.any():
        move[:] = 0.0
        move[free] = np.linalg.lstsq(jacobian[:, free], -residual, rcond=None)[0]
        blocked = [
            i
            for i, name in enumerate(active)
            if free[i]
            and (
                (current[name] <= 0.0 and move[i] < 0.0)
                or (current[name] >= _upper_bound(name, current) - 1e-12 and move[i] > 0.0)
            )
        ]
        if not blocked:
            break
        free[blocked] = False
    return move


def _newton(
    evaluate: Callable[[dict[str, float]], np.ndarray],
    target: np.ndarray,
    active: tuple[str, ...],
    current: dict[str, float],
) -> tuple[dict[str, float], np.ndarray]:
    """Newton steps on all active parameters at once from ``current``: a finite-difference
    Jacobian kept up to date by Broyden's update, backtracking until the residual shrinks."""
    moments = evaluate(current)
    jacobian = np.zeros((len(active), len(active)))
    for i, name in enumerate(active):
        step = _FIRST_STEP if current[name] + _FIRST_STEP <= _upper_bound(name, current) else -_FIRST_STEP
        jacobian[:, i] = (evaluate(_project({**current, name: current[name] + step})) - moments) / step
    for _ in range(_MAX_NEWTON_STEPS):
        residual = moments - target
        if np.abs(residual).max() < _MOMENT_TOL:
            break
        move = _newton_move(jacobian, residual, current, active)
        move *= min(1.0, _MAX_NEWTON_MOVE / max(np.abs(move).max(), 1e-300))
        best = None
        for _halving in range(3):
            trial = _project({**current, **{name: current[name] + move[i] for i, name in enumerate(active)}})
            taken = np.array([trial[name] - current[name] for name in active])
            if np.abs(taken).max() < _PARAM_TOL / 4:
                break
            trial_moments = evaluate(trial)
            if best is None or np.linalg.norm(trial_moments - target) < np.linalg.norm(best[1] - target):
                best = (trial, trial_moments, taken)
            if np.linalg.norm(trial_moments - target) < np.linalg.norm(residual):
                break
            move /= 2
        if best is None or np.linalg.norm(best[1] - target) >= np.linalg.norm(residual):
            break
        trial, trial_moments, taken = best
        jacobian += np.outer(trial_moments - moments - jacobian @ taken, taken) / (taken @ taken)
        current, moments = trial, trial_moments
    return current, moments


def _calibrate(
    simulate: Callable[[dict[str, float], tuple[str, ...]], dict[str, float]],
    targets: dict[str, float],
    active: tuple[str, ...],
    start: dict[str, float],
) -> tuple[dict[str, float], dict[str, float]]:
    """Parameter values whose simulated moments equal ``targets`` on the ``active`` parameters,
    and the moments they reach.

    Newton steps on all parameters at once from the closed-form start (the moments are coupled:
    skew and tail both move the top-k share and the entropy). When that stalls short of the
    targets (a poor start, a bound), one-parameter root finding (each moment is monotone in its
    own parameter) gives a new start for a second round of Newton steps.
    """
    current = _project({name: (start[name] if name in active else 0.0) for name in _NAMES})
    if not active:
        return current, {}
    target = np.array([targets[name] for name in active])

    def evaluate(values: dict[str, float]) -> np.ndarray:
        moments = simulate(values, active)
        return np.array([moments[name] for name in active])

    current, moments = _newton(evaluate, target, active, current)
    if np.abs(moments - target).max() > _RESTART_TOL:
        for name in active:
            current[name] = _solve(
                lambda x, name=name: simulate({**current, name: x}, (name,))[name],
                targets[name], 0.0, _upper_bound(name, current), current[name],
            )
        retry, retry_moments = _newton(evaluate, target, active, current)
        if np.linalg.norm(retry_moments - target) < np.linalg.norm(moments - target):
            current, moments = retry, retry_moments
    return current, dict(zip(active, moments.tolist()))


# ---------------------------------------------------------------------- fit
def fit(
    trace: Trace,
    *,
    phase: str | None = None,
    max_tokens: int = 16384,
    seed: int = 0,
    source_trace: str | None = None,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
) -> FitResult:
    """Estimate the synthetic process's parameters from a real trace.

    Parameters
    ----------
    trace : Trace
        The real trace. E, k and the number of layers are taken from it.
    phase : {"decode", "prefill"} or None
        Which tokens to fit; None fits decode tokens when there are any, else prefill.
    max_tokens : int
        Fit on at most this many tokens: whole sequences drawn in seeded random order, the last
        one cut. Larger is more precise and slower (the solver draws traces of this size).
    seed : int
        Seed of the subsample, of the calibration traces and of the returned parameters.
    source_trace : str, optional
        How to name the real trace in the parameters (default: its model name).
    window_tokens : int
        Look-back of the ``reuse_window`` diagnostic.

    Returns
    -------
    FitResult
        ``params`` (shape: the phase's sequence count and mean length in the whole trace) and the
        observed-vs-synthetic diagnostics.

    Notes
    -----
    Estimation is by the simulated method of moments (McFadden 1989; Pakes & Pollard 1989): find
    the parameters whose synthetic trace, with the fitted sample's exact sequence lengths and drawn
    with common random numbers (one seed), has the same five moments as the sample: mean per-layer
    top-k share (-> ``popularity_skew``) and load entropy (-> ``popularity_tail``), mean
    per-sequence load entropy (-> ``sequence_affinity``), previous-token reuse rate
    (-> ``persistence``) and cross-layer predictability (-> ``cross_layer``). From a closed-form
    start (inclusion-probability approximation for the popularity curve, chance-corrected reuse
    and predictability), Newton steps with a finite-difference Jacobian and Broyden updates solve
    the coupled system; if they stall, one-dimensional root finding per parameter (Illinois
    regula falsi; each moment is monotone in its own parameter) restarts them.

    Why simulation rather than closed forms or a likelihood: (i) a token's k distinct slots
    compete, so the moments have no closed form in the parameters; (ii) the mechanisms interact
    (persistence propagates along cross-layer chains, and concentrates a sequence's load as its
    own preferences do); (iii) the sample statistics are biased on finite traces (sorting noisy
    counts inflates skew, short sequences look concentrated, an in-sample co-occurrence table
    inflates predictability), and a synthetic sample of identical shape carries the same biases,
    which then cancel. A likelihood would need the latent source of every slot and the real
    router's cross-layer map, which a trace does not reveal.

    Moments outside what the model can produce (reuse below chance, say) pin the parameter to a
    bound; a moment missed by more than twice its seed-to-seed spread adds a note.
    :meth:`FitResult.diagnostics` shows what the model captures and what it misses (reuse over a
    window of tokens and LRU hit rates are not fitted). Skew and tail can trade off against each
    other when the sample is small: judge them by the popularity curve they give
    (:func:`~moesim.trace.synthetic.rank_popularity`), not one by one. The affinity is searched
    up to 0.6, beyond which the per-sequence entropy stops identifying it.

    References: D. McFadden, "A Method of Simulated Moments for Estimation of Discrete Response
    Models Without Numerical Integration", Econometrica 57(5), 1989. A. Pakes, D. Pollard,
    "Simulation and the Asymptotics of Optimization Estimators", Econometrica 57(5), 1989.
    C. G. Broyden, "A Class of Methods for Solving Nonlinear Simultaneous Equations", Math. Comp.
    19, 1965.
    """
    if not isinstance(trace, Trace):
        raise ConfigError(f"trace: expected a moesim Trace, got {type(trace).__name__}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 2:
        raise ConfigError(f"max_tokens: expected an integer >= 2 such as 16384, got {max_tokens!r}")
    if isinstance(window_tokens, bool) or not isinstance(window_tokens, (int, np.integer)) or window_tokens < 1:
        raise ConfigError(f"window_tokens: expected an integer >= 1 such as 8, got {window_tokens!r}")
    if trace.num_tokens == 0:
        raise TraceError("trace: has no tokens; nothing to fit")
    selected, phase = _select_phase(trace, phase)
    # Validates the seed and the shape before any work.
    base = SynthParams(
        num_experts=trace.num_experts,
        top_k=trace.top_k,
        num_layers=trace.num_layers,
        tokens_per_sequence=max(1, int(round(selected.num_tokens / selected.num_sequences))),
        num_sequences=selected.num_sequences,
        seed=seed,
        phase=phase,
        model=trace.model or "synthetic",
        source_trace=source_trace if source_trace is not None else (trace.model or "unnamed trace"),
    )
    sample = _subsample(selected, int(max_tokens), base.seed)
    targets = _moments(sample)
    active, notes = _identifiable(sample, targets)

    def simulate(values: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
        return _moments(_like(sample, dataclasses.replace(base, **values)), names)

    fitted, reached = _calibrate(simulate, targets, active, _starting_point(sample, targets))
    params = dataclasses.replace(base, **fitted)
    observed = routing_stats(sample, window_tokens=int(window_tokens))
    # The fitted seed, then other seeds: how much each statistic moves by chance alone.
    draws = [
        routing_stats(
            _like(sample, dataclasses.replace(params, seed=(params.seed + i) % 2**64)),
            window_tokens=int(window_tokens),
            lru_capacities=observed.lru_capacities,
        )
        for i in range(_REPLICATES)
    ]
    summaries = [draw.summary() for draw in draws]
    spread = {name: float(np.std([s[name] for s in summaries], ddof=1)) for name in summaries[0]}
    notes += _unmatched_notes(fitted, targets, reached, spread)
    return FitResult(
        params=params,
        observed=observed,
        synthetic=draws[0],
        phase=phase,
        num_tokens_used=sample.num_tokens,
        num_sequences_used=sample.num_sequences,
        fitted_moments=tuple(_MOMENTS[name] for name in active),
        synthetic_sd=spread,
        notes=tuple(notes),
    )


def _identifiable(sample: Trace, targets: dict[str, float]) -> tuple[tuple[str, ...], list[str]]:
    """Parameters the sample can pin down, and notes on the others (which stay 0)."""
    if sample.top_k == sample.num_experts:
        return (), [f"top_k == num_experts ({sample.num_experts}): every token uses every expert; nothing to fit"]
    active, notes = ["popularity_skew", "popularity_tail"], []
    lengths = np.diff(sample.seq_offsets)
    if (lengths > 1).sum() >= 2:
        active.append("sequence_affinity")
    else:
        notes.append(
            "fewer than two sequences with more than one token: sequence preferences cannot be told "
            "from layer popularity, sequence_affinity set to 0"
        )
    if math.isfinite(targets["persistence"]):
        active.append("persistence")
    else:
        notes.append("no token has a predecessor in its sequence: persistence is not identifiable, set to 0")
    if math.isfinite(targets["cross_layer"]):
        active.append("cross_layer")
    else:
        notes.append("one MoE layer: cross_layer is not identifiable, set to 0")
    return tuple(active), notes


def _unmatched_notes(
    fitted: dict[str, float], targets: dict[str, float], reached: dict[str, float], spread: dict[str, float]
) -> list[str]:
    """A note for every moment the fit missed by more than sampling noise, naming a bound it hit."""
    notes = []
    for name, value in reached.items():
        moment = _MOMENTS[name]
        noise = spread.get(moment, 0.0)
        if abs(value - targets[name]) <= max(_REPORT_TOL, 2.0 * noise):
            continue
        sign = -1.0 if name in ("popularity_tail", "sequence_affinity") else 1.0
        high = _upper_bound(name, fitted)
        at = " (at its lower bound)" if fitted[name] <= 0.0 else ""
        at = " (at its upper bound)" if fitted[name] >= high - _PARAM_TOL else at
        notes.append(
            f"{moment} not matched: synthetic {sign * value:.4f} vs observed {sign * targets[name]:.4f} "
            f"(seed-to-seed sd {noise:.4f}) with {name} = {fitted[name]:.4g}{at}, the closest the model came"
        )
    return notes
