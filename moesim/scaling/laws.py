"""Fitting hit-rate laws ``hit(E)`` and choosing between them.

Two two-parameter laws for the hit rate of an expert cache of fixed size in bytes as the number of
experts E grows (experts split finer, :meth:`ModelSpec.with_granularity`):

* ``exponential``: ``hit(E) = 1 - a * exp(-b * E)``, the saturating form of the granularity claim
  (misses vanish exponentially fast in E);
* ``power``: ``hit(E) = 1 - a * E**(-b)``, misses fall as a power of E (the functional form
  Krajewski et al. 2024 use for granularity in their loss law).

Fits minimise squared error on the hit rate by variable projection: for a fixed rate ``b`` the
amplitude ``a`` has a closed form, so the residual sum of squares is a function of ``b`` alone,
minimised by a dense grid and golden-section refinement (deterministic, no starting guess, no
scipy). Models are compared by AIC and AICc with Gaussian errors and by Akaike weights
(Burnham & Anderson 2002): a difference below 2 does not distinguish the laws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moesim.errors import ConfigError

LAWS = ("exponential", "power")
FORMULAS = {
    "exponential": "hit(E) = 1 - a*exp(-b*E)",
    "power": "hit(E) = 1 - a*E^(-b)",
}
# Below this AIC difference the evidence does not separate two models (Burnham & Anderson 2002, 2.6).
DISTINGUISHING_DELTA_AIC = 2.0
_NUM_PARAMS = 2
_GRID = 4001
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class LawFit:
    """One law fitted to ``(x, y)``.

    Attributes
    ----------
    law, formula : str
        ``"exponential"`` or ``"power"`` and the formula with its parameter names.
    a, b : float
        Fitted amplitude and rate (exponent).
    x, y, residuals : tuple of float
        The data and ``y - fitted``.
    rss, r_squared : float
        Residual sum of squares and ``1 - rss / total sum of squares`` (NaN when y is constant).
    aic, aicc : float
        ``n ln(rss/n) + 2(p+1)`` with p = 2 parameters and the error variance, and its small-sample
        correction ``aic + 2(p+1)(p+2)/(n-p-2)`` (NaN when n <= p + 2).
    """

    law: str
    formula: str
    a: float
    b: float
    x: tuple[float, ...]
    y: tuple[float, ...]
    residuals: tuple[float, ...]
    rss: float
    r_squared: float
    aic: float
    aicc: float

    @property
    def num_points(self) -> int:
        return len(self.x)

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        """The fitted hit rate at ``x`` experts."""
        return 1.0 - self.a * _basis(self.law, np.asarray(x, dtype=np.float64), self.b)

    def as_dict(self) -> dict[str, object]:
        return {
            "law": self.law,
            "formula": self.formula,
            "a": self.a,
            "b": self.b,
            "num_points": self.num_points,
            "rss": self.rss,
            "r_squared": self.r_squared,
            "aic": self.aic,
            "aicc": self.aicc,
            "x": list(self.x),
            "y": list(self.y),
            "residuals": list(self.residuals),
        }


@dataclass(frozen=True)
class LawComparison:
    """Both laws fitted to the same data and which one the data support.

    ``best`` is the law of lowest AIC; ``delta_aic`` the other's AIC minus the best's;
    ``weights`` the Akaike weights; ``distinguished`` whether ``delta_aic`` reaches
    :data:`DISTINGUISHING_DELTA_AIC`; ``verdict`` says it in a sentence.
    """

    fits: tuple[LawFit, ...]
    best: str
    delta_aic: float
    weights: dict[str, float]
    distinguished: bool
    verdict: str

    def fit(self, law: str) -> LawFit:
        for candidate in self.fits:
            if candidate.law == law:
                return candidate
        raise ConfigError(f"law: expected one of {', '.join(LAWS)}, got {law!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "fits": [f.as_dict() for f in self.fits],
            "best": self.best,
            "delta_aic": self.delta_aic,
            "weights": dict(self.weights),
            "distinguished": self.distinguished,
            "verdict": self.verdict,
        }


def _basis(law: str, x: np.ndarray, b: float) -> np.ndarray:
    if law == "exponential":
        return np.exp(-b * x)
    return np.exp(-b * np.log(x))


def _check_data(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, law: str
) -> tuple[np.ndarray, np.ndarray]:
    if law not in LAWS:
        raise ConfigError(f"law: expected one of {', '.join(LAWS)}, got {law!r}")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ConfigError(f"x, y: expected two 1-D arrays of equal length, got shapes {xs.shape} and {ys.shape}")
    if len(xs) < _NUM_PARAMS + 1:
        raise ConfigError(
            f"x: a two-parameter law needs at least {_NUM_PARAMS + 1} points to leave a residual, got {len(xs)}; "
            f"add granularities or cache budgets"
        )
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ConfigError("x, y: expected finite values (drop points whose simulation failed)")
    if (xs <= 0).any():
        raise ConfigError(f"x: expected numbers of experts > 0, got {xs.min():g}")
    if len(np.unique(xs)) < 2:
        raise ConfigError("x: expected at least two distinct numbers of experts")
    return xs, ys


def _profile(law: str, xs: np.ndarray, miss: np.ndarray, b: float) -> tuple[float, float]:
    """``(rss, a)`` at rate ``b`` with the least-squares amplitude for it."""
    u = _basis(law, xs, b)
    denominator = float(u @ u)
    if not math.isfinite(denominator) or denominator == 0.0:
        return math.inf, 0.0
    a = float(u @ miss) / denominator
    residual = miss - a * u
    return float(residual @ residual), a


def _rate_range(law: str, xs: np.ndarray) -> tuple[float, float]:
    # The rate is searched where the basis still varies over the data (exp(-b x) between e^-60 and
    # e^20 at the largest x; x^-b likewise at the largest x / smallest x ratio), which includes
    # decreasing (b < 0) fits so that a law that does not describe the data says so by its R^2.
    if law == "exponential":
        scale = float(xs.max())
    else:
        scale = max(float(np.log(xs.max())), 1e-12)
    return -20.0 / scale, 60.0 / scale


def fit_law(law: str, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LawFit:
    """Least-squares fit of ``law`` (``"exponential"`` or ``"power"``) to hit rates ``y`` at ``x`` experts.

    Parameters
    ----------
    law : str
        One of :data:`LAWS`.
    x : array of float
        Numbers of experts (> 0), at least 3 points with 2 distinct values.
    y : array of float
        Hit rates (any real numbers; they are not clipped).

    Returns
    -------
    LawFit

    Notes
    -----
    Variable projection (Golub & Pereyra 1973): ``a(b) = <u, m> / <u, u>`` with ``m = 1 - y`` and
    ``u`` the law's basis at rate b, then ``rss(b)`` is minimised over a 4001-point grid and refined
    by golden-section search between the grid neighbours of the best point. The same data give the
    same fit, bit for bit.
    """
    xs, ys = _check_data(x, y, law)
    miss = 1.0 - ys
    low, high = _rate_range(law, xs)
    grid = np.linspace(low, high, _GRID)
    scores = np.array([_profile(law, xs, miss, float(b))[0] for b in grid])
    best = int(np.argmin(scores))
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, _GRID - 1)]
    # Golden-section search on the bracket around the grid minimum.
    c = right - _GOLDEN * (right - left)
    d = left + _GOLDEN * (right - left)
    fc, fd = _profile(law, xs, miss, c)[0], _profile(law, xs, miss, d)[0]
    for _ in range(80):
        if fc <= fd:
            right, d, fd = d, c, fc
            c = right - _GOLDEN * (right - left)
            fc = _profile(law, xs, miss, c)[0]
        else:
            left, c, fc = c, d, fd
            d = left + _GOLDEN * (right - left)
            fd = _profile(law, xs, miss, d)[0]
    candidates = [(scores[best], float(grid[best])), (fc, float(c)), (fd, float(d))]
    _, rate = min(candidates)
    rss, amplitude = _profile(law, xs, miss, rate)
    residuals = ys - (1.0 - amplitude * _basis(law, xs, rate))
    total = float(((ys - ys.mean()) ** 2).sum())
    n = len(xs)
    # A perfect fit has rss 0 and log(0) = -inf; floor it so AIC stays comparable.
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * (_NUM_PARAMS + 1)
    k = _NUM_PARAMS + 1
    aicc = aic + 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.nan
    return LawFit(
        law=law,
        formula=FORMULAS[law],
        a=float(amplitude),
        b=float(rate),
        x=tuple(float(v) for v in xs),
        y=tuple(float(v) for v in ys),
        residuals=tuple(float(v) for v in residuals),
        rss=float(rss),
        r_squared=1.0 - rss / total if total > 0 else math.nan,
        aic=float(aic),
        aicc=float(aicc),
    )


def compare_laws(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LawComparison:
    """Fit both laws to ``(x, y)`` and say which one the data support.

    Notes
    -----
    Both laws have two parameters, so AIC, AICc and BIC rank them identically (by residual sum of
    squares); what the criterion adds is a scale: ``delta_aic = n ln(rss_other / rss_best)``, and
    an Akaike weight ``exp(-delta/2) / (1 + exp(-delta/2))``. Burnham & Anderson (2002), "Model
    Selection and Multimodel Inference", section 2.6: delta < 2 is substantial support for both.
    """
    fits = tuple(fit_law(law, x, y) for law in LAWS)
    return _compare(fits, sum_of=None)


def compare_pooled(comparisons: Sequence[LawComparison]) -> LawComparison | None:
    """One verdict over several independent data sets (e.g. one per cache budget): the AICs add.

    The returned comparison's ``fits`` are those of the first data set (for display); its
    ``delta_aic``, ``weights`` and ``verdict`` use the summed AICs. None when ``comparisons`` is empty.
    """
    if not comparisons:
        return None
    sums = {law: sum(c.fit(law).aic for c in comparisons) for law in LAWS}
    return _compare(comparisons[0].fits, sum_of=(sums, len(comparisons)))


def _compare(fits: tuple[LawFit, ...], sum_of: tuple[dict[str, float], int] | None) -> LawComparison:
    aics = {f.law: f.aic for f in fits} if sum_of is None else sum_of[0]
    best = min(LAWS, key=lambda law: (aics[law], LAWS.index(law)))
    other = next(law for law in LAWS if law != best)
    delta = aics[other] - aics[best]
    relative = {law: math.exp(-(aics[law] - aics[best]) / 2.0) for law in LAWS}
    total = sum(relative.values())
    weights = {law: relative[law] / total for law in LAWS}
    distinguished = delta >= DISTINGUISHING_DELTA_AIC
    where = "" if sum_of is None else f" over {sum_of[1]} data sets"
    r2 = (
        ""
        if sum_of is not None
        else f"; R^2 {fits[LAWS.index(best)].r_squared:.4f} vs {fits[LAWS.index(other)].r_squared:.4f}"
    )
    if distinguished:
        verdict = (
            f"the data support the {best} law{where} (AIC lower by {delta:.1f}, Akaike weight {weights[best]:.3f}{r2})"
        )
    else:
        verdict = (
            f"the data do not distinguish the laws{where} (AIC difference {delta:.1f} < "
            f"{DISTINGUISHING_DELTA_AIC:g}; {best} marginally better{r2})"
        )
    return LawComparison(
        fits=fits, best=best, delta_aic=float(delta), weights=weights, distinguished=distinguished, verdict=verdict
    )
