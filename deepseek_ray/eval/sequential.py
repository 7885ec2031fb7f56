"""Confidence sequences for Δ = candidate's metric − live's, valid however often they are looked at.

A confidence sequence (CS) is a bound that holds at every labelled count at once: ``P(∃n: Δ < lower_n) ≤ α``.
So the decision may be re-checked at every label, and it stands once reached (the running intersection:
``lower`` only rises, ``upper`` only falls). Each side is a one-sided ``1 − α`` CS on its own, so

* ``P(promote ever | Δ ≤ threshold) ≤ α`` and ``P(keep ever | Δ ≥ threshold) ≤ α``;
* the interval ``[lower, upper]`` covers Δ at every count with probability ≥ 1 − 2α.

Two families, both vectorised over independent *runs* (the bench simulates thousands at once; the
evaluator is one run), both updated in O(batch) from running sums:

* :class:`BettingCS` — **exact** (non-asymptotic) for accuracy: Δ is the mean of ``d = 1[candidate right] −
  1[live right] ∈ {−1, 0, 1}``; ``x = (d + 1) / 2 ∈ [0, 1]`` is bet on (Waudby-Smith & Ramdas 2023,
  "Estimating means of bounded random variables by betting", JRSS-B): for each candidate mean ``m`` the
  capital ``K_n(m) = ∏ (1 + λ_i (x_i − m))`` is a nonnegative supermartingale whenever ``E x ≤ m``, so by
  Ville's inequality it reaches ``1/α`` with probability ≤ α; the ``m`` it has reached are excluded. The bets are
  predictable plug-ins, ``λ_i = √(2 log(1/α) / (σ̂²_{i−1} · max(i, horizon)))`` truncated at ``c/m``, with
  ``σ̂²`` the running variance (prior 1/4): tightest around ``horizon`` labels, and shrinking after it so that
  any Δ ≠ threshold is decided in the end. ``K_n(m)`` falls with ``m`` for these bets, so the excluded
  means form a half-line and the grid (step 0.001 on Δ, the threshold on it) rounds the bounds outwards.
* :class:`AsymptoticCS` — **asymptotic** for F1, precision, recall (binary and macro), MAE and RMSE (and
  accuracy if asked): Δ = g(E z) for per-pair features ``z`` (:mod:`.metrics`), ``σ̂² = ∇gᵀ Cov(z) ∇g`` by the
  delta method, and the one-sided normal-mixture boundary of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
  2021 ("Time-uniform central limit theory and asymptotic confidence sequences"): ``lower_n = Δ̂_n −
  σ̂_n · s_n / n`` where ``s_n`` solves ``2 (1 + ρ²n)^{-1/2} exp(ρ²s²/(2(1 + ρ²n))) Φ(ρs/√(1 + ρ²n)) = 1/α``
  and ``ρ`` makes ``s_n`` smallest at ``n = horizon``. It starts after ``min_n`` labels (and a nonzero σ̂),
  before which plug-in variances are too rough to be trusted. :class:`AucCS` is the same on the rank
  (DeLong) influence terms of ROC AUC, recomputed at each look.

Both assume the labelled pairs arrive exchangeably (each a draw from the same population, as in a stable
shadow period). Under drift — or a file sorted by class — the running intersection can end up excluding the
running estimate; restart the comparison (``ShadowModeEvaluator.reset``) when the population changes.

``fixed_sample_bounds`` is the naive test (a Wald interval for one fixed n) that the bench re-checks at
every look to show why these are needed.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .metrics import PairedMetric

GRID_STEP = 0.001  # on Δ, for the betting CS's reported bounds
_CHUNK = 2**21  # elements per vectorised step: bounds memory whatever the batch and run counts


class _Running:
    """The running intersection of one-sided bounds and the counts at which each side first decided."""

    exact = False
    method = ""

    def __init__(self, alpha: float, threshold: float, runs: int):
        if not 0 < alpha <= 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5], got {alpha}")
        self.alpha, self.threshold, self.runs = float(alpha), float(threshold), int(runs)
        self.n = 0
        self.lower = np.full(runs, -np.inf)
        self.upper = np.full(runs, np.inf)
        self.promoted_at = np.zeros(runs, dtype=np.int64)  # labelled count of the first lower > threshold; 0: not
        self.kept_at = np.zeros(runs, dtype=np.int64)  # labelled count of the first upper < threshold

    def _first(self, decided_at: np.ndarray, crossed: np.ndarray, counts: np.ndarray) -> None:
        """Record, for runs not decided yet, the count of the first crossing in ``crossed`` ``(runs, b)``."""
        new = (decided_at == 0) & crossed.any(1)
        decided_at[new] = counts[crossed[new].argmax(1)]

    def _record(self, lower: np.ndarray, upper: np.ndarray, counts: np.ndarray) -> None:
        """Fold per-count bounds ``(runs, b)`` at labelled counts ``counts`` into the running intersection."""
        lower = np.maximum(self.lower[:, None], np.maximum.accumulate(lower, 1))
        upper = np.minimum(self.upper[:, None], np.minimum.accumulate(upper, 1))
        self._first(self.promoted_at, lower > self.threshold, counts)
        self._first(self.kept_at, upper < self.threshold, counts)
        self.lower, self.upper = lower[:, -1], upper[:, -1]

    def verdicts(self) -> np.ndarray:
        """Per run: ``promote``, ``keep`` or ``need_more_data`` — the side that decided first stands.

        >>> BettingCS(runs=2).verdicts().tolist()
        ['need_more_data', 'need_more_data']
        """
        promote = (self.promoted_at > 0) & ((self.kept_at == 0) | (self.promoted_at <= self.kept_at))
        keep = (self.kept_at > 0) & ~promote
        return np.where(promote, "promote", np.where(keep, "keep", "need_more_data"))

    def decided_at(self) -> np.ndarray:
        """Per run: the labelled count at which the standing verdict was reached (0: none yet)."""
        promote = self.verdicts() == "promote"
        return np.where(promote, self.promoted_at, self.kept_at)


class BettingCS(_Running):
    """Exact CS for the mean of ``d ∈ [−1, 1]`` (accuracy's paired differences) by betting (see the module).

    ``grid`` holds the Δ values tested (the threshold is always one of them); the bench passes just
    ``[threshold]``, which gives the same verdicts for less work since each value is tested on its own.

    >>> rng = np.random.default_rng(0)
    >>> d = rng.choice([-1, 0, 1], p=[0.05, 0.75, 0.2], size=(1, 2000))  # Δ = 0.15
    >>> cs = BettingCS(alpha=0.05, threshold=0.0)
    >>> cs.update(d)
    >>> cs.verdicts()[0], bool(cs.lower[0] < 0.15 < cs.upper[0])
    (np.str_('promote'), True)
    """

    exact = True
    method = "betting"

    def __init__(
        self,
        alpha: float = 0.05,
        threshold: float = 0.0,
        horizon: int = 5000,
        runs: int = 1,
        grid: np.ndarray | None = None,
        c: float = 0.5,
    ):
        super().__init__(alpha, threshold, runs)
        if not -1 < threshold < 1:
            raise ValueError(f"an accuracy threshold must lie in (-1, 1), got {threshold}")
        steps = int(round(2 / GRID_STEP))
        grid = np.linspace(-1, 1, steps + 1)[1:-1] if grid is None else np.asarray(grid, dtype=np.float64)
        self.grid = np.union1d(grid, [threshold])
        self.m = (self.grid + 1) / 2  # the grid in x = (d + 1) / 2 units
        self.column = int(np.searchsorted(self.grid, threshold))
        self.horizon, self.c = int(horizon), float(c)
        self.log_level = math.log(1 / alpha)
        self.sum_x = np.zeros(runs)
        self.sum_sq = np.zeros(runs)  # Σ (x_i − μ̂_i)², μ̂_i including x_i (the plug-in variance's numerator)
        self.log_up = np.zeros((runs, len(self.grid)))  # log K⁺(m): evidence that E x > m
        self.log_down = np.zeros((runs, len(self.grid)))  # log K⁻(m): evidence that E x < m
        self.above = np.zeros((runs, len(self.grid)), dtype=bool)  # Δ > grid value shown (ever)
        self.below = np.zeros((runs, len(self.grid)), dtype=bool)  # Δ < grid value shown (ever)

    def update(self, d: Any) -> None:
        """Add paired differences ``d`` ``(runs, b)`` (or ``(b,)`` for one run), in arrival order."""
        d = np.asarray(d, dtype=np.float64).reshape(self.runs, -1)
        if np.any(np.abs(d) > 1):
            raise ValueError("paired differences must lie in [-1, 1]")
        step = max(1, _CHUNK // (self.runs * len(self.grid)))
        for start in range(0, d.shape[1], step):
            self._update((d[:, start : start + step] + 1) / 2)

    def update_features(self, z: Any) -> None:
        """Add accuracy's per-pair features ``[1[candidate right], 1[live right]]`` ``(runs, b, 2)``."""
        z = np.asarray(z, dtype=np.float64)
        self.update(z[..., 0] - z[..., 1])

    def _update(self, x: np.ndarray) -> None:
        counts = self.n + np.arange(1, x.shape[1] + 1)
        mean = (0.5 + self.sum_x[:, None] + np.cumsum(x, 1)) / (counts + 1)
        sq = self.sum_sq[:, None] + np.cumsum((x - mean) ** 2, 1)
        var = np.concatenate([(0.25 + self.sum_sq[:, None]) / (self.n + 1), (0.25 + sq[:, :-1]) / (counts[:-1] + 1)], 1)
        bet = np.sqrt(2 * self.log_level / (var * np.maximum(counts, self.horizon)))[..., None]  # predictable
        gap = x[..., None] - self.m  # (runs, b, grid)
        up = self.log_up[:, None] + np.cumsum(np.log1p(np.minimum(bet, self.c / self.m) * gap), 1)
        down = self.log_down[:, None] + np.cumsum(np.log1p(-np.minimum(bet, self.c / (1 - self.m)) * gap), 1)
        hit_up, hit_down = up >= self.log_level, down >= self.log_level
        self._first(self.promoted_at, hit_up[..., self.column], counts)
        self._first(self.kept_at, hit_down[..., self.column], counts)
        self.above |= hit_up.any(1)
        self.below |= hit_down.any(1)
        self.log_up, self.log_down = up[:, -1], down[:, -1]
        self.sum_x += x.sum(1)
        self.sum_sq = sq[:, -1]
        self.n = int(counts[-1])
        # Excluded values are a half-line on each side; the outermost excluded grid value bounds Δ (strictly).
        size, shown_above, shown_below = len(self.grid), self.above.sum(1), self.below.sum(1)
        self.lower = np.where(shown_above > 0, self.grid[np.maximum(shown_above - 1, 0)], -1.0)
        self.upper = np.where(shown_below > 0, self.grid[np.minimum(size - shown_below, size - 1)], 1.0)


@functools.lru_cache(maxsize=64)
def mixture_rho(alpha: float, horizon: int) -> float:
    """The mixture's spread ``ρ`` that makes the one-sided boundary tightest at ``horizon`` labels.

    >>> round(mixture_rho(0.05, 5000), 4)
    0.0366
    """
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_rho: float(mixture_boundary(np.array([horizon]), alpha, math.exp(log_rho))[0]),
        bounds=(math.log(1e-6), math.log(10.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return math.exp(found.x)


def mixture_boundary(counts: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    """The one-sided normal-mixture boundary ``s_n`` for a sum of ``n`` unit-variance terms: a standardised
    sum crosses it at some ``n`` with probability ≤ α (exactly for Gaussian terms, asymptotically otherwise).

    In units of √n: wide early, ≈ 2.77 at the horizon it is tuned for (a fixed-n one-sided test: 1.645).

    >>> counts = np.array([100, 1000, 5000, 20000])
    >>> (mixture_boundary(counts, 0.05, mixture_rho(0.05, 5000)) / np.sqrt(counts)).round(2).tolist()
    [6.35, 3.09, 2.77, 2.87]
    """
    from scipy.special import log_ndtr

    counts = np.asarray(counts, dtype=np.float64)
    spread = 1 + rho**2 * counts
    target = math.log(1 / alpha) - math.log(2) + 0.5 * np.log(spread)  # u²/2 + log Φ(u) = target, u increasing
    low, high = np.zeros_like(target), np.sqrt(2 * (target + math.log(2))) + 1
    for _ in range(60):  # bisection: u²/2 + log Φ(u) increases in u, and u ∈ [0, √(2(target + log 2))]
        middle = (low + high) / 2
        below = middle**2 / 2 + log_ndtr(middle) < target
        low, high = np.where(below, middle, low), np.where(below, high, middle)
    return high * np.sqrt(spread) / rho


class AsymptoticCS(_Running):
    """Asymptotic CS for Δ = g(E z) of a :class:`~.metrics.PairedMetric` (see the module).

    >>> from deepseek_ray.eval.metrics import Ratio
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 3000)
    >>> live = np.where(rng.random(3000) < 0.8, y, 1 - y)
    >>> candidate = np.where(rng.random(3000) < 0.9, y, 1 - y)
    >>> metric = Ratio('f1_score', 'binary')
    >>> cs = AsymptoticCS(metric, threshold=0.0)
    >>> cs.update(metric.features(y, live, candidate)[None])
    >>> cs.verdicts()[0]
    np.str_('promote')
    """

    method = "asymptotic"

    def __init__(
        self,
        metric: PairedMetric,
        alpha: float = 0.05,
        threshold: float = 0.0,
        horizon: int = 5000,
        runs: int = 1,
        min_n: int = 100,
    ):
        super().__init__(alpha, threshold, runs)
        self.metric, self.min_n = metric, int(min_n)
        self.rho = mixture_rho(self.alpha, int(horizon))
        self.sum = np.zeros((runs, metric.size))
        self.outer = np.zeros((runs, metric.size, metric.size))
        self.delta = np.zeros(runs)  # Δ̂ and σ̂ at the last count (the fixed-sample test reads them)
        self.sd = np.zeros(runs)

    def update(self, z: Any) -> None:
        """Add per-pair features ``z`` ``(runs, b, size)`` (or ``(b, size)`` for one run), in arrival order."""
        z = np.asarray(z, dtype=np.float64).reshape(self.runs, -1, self.metric.size)
        step = max(1, _CHUNK // (self.runs * self.metric.size**2))
        for start in range(0, z.shape[1], step):
            self._update(z[:, start : start + step])

    update_features = update

    def _update(self, z: np.ndarray) -> None:
        counts = self.n + np.arange(1, z.shape[1] + 1)
        sums = self.sum[:, None] + np.cumsum(z, 1)
        outer = self.outer[:, None] + np.cumsum(z[..., :, None] * z[..., None, :], 1)
        mean = sums / counts[:, None]
        cov = outer / counts[:, None, None] - mean[..., :, None] * mean[..., None, :]
        delta, grad = self.metric(mean)
        sd = np.sqrt(np.maximum(np.einsum("rbi,rbij,rbj->rb", grad, cov, grad), 0.0))
        lower, upper = asymptotic_bounds(delta, sd, counts, self.alpha, self.rho, self.min_n)
        self._record(lower, upper, counts)
        self.sum, self.outer, self.n = sums[:, -1], outer[:, -1], int(counts[-1])
        self.delta, self.sd = delta[:, -1], sd[:, -1]

    @property
    def mean(self) -> np.ndarray:
        """The features' running mean per run, ``(runs, size)``."""
        return self.sum / max(self.n, 1)


def asymptotic_bounds(
    delta: np.ndarray, sd: np.ndarray, counts: np.ndarray, alpha: float, rho: float, min_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided asymptotic CS bounds at each count; ``∓inf`` before ``min_n`` or while ``σ̂`` is (numerically) 0.

    >>> lower, upper = asymptotic_bounds(np.array([0.1, 0.1]), np.array([0.5, 0.5]), np.array([50, 5000]), 0.05,
    ...                                  mixture_rho(0.05, 5000), min_n=100)
    >>> lower.round(4).tolist(), upper.round(4).tolist()
    ([-inf, 0.0804], [inf, 0.1196])
    """
    radius = sd * mixture_boundary(counts, alpha, rho) / counts
    usable = (counts >= min_n) & (sd > 1e-12)  # all pairs alike so far: a zero-width bound would lock the intersection
    return np.where(usable, delta - radius, -np.inf), np.where(usable, delta + radius, np.inf)


def fixed_sample_bounds(delta: Any, sd: Any, n: int, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The naive one-sided Wald bounds ``Δ̂ ∓ z_{1−α} σ̂/√n``: valid for one look at a fixed ``n`` only.

    >>> [round(float(v), 4) for v in fixed_sample_bounds(0.02, 0.4, 1600)]
    [0.0036, 0.0364]
    """
    from scipy.stats import norm

    radius = norm.ppf(1 - alpha) * np.asarray(sd) / math.sqrt(max(n, 1))
    return np.asarray(delta) - radius, np.asarray(delta) + radius


# ------------------------------------------------------------------------------------------------ AUC
def auc_terms(positive: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray]:
    """ROC AUC (ties count a half) and each example's influence term (DeLong's placement values,
    centred and scaled by the class share), whose mean square / n is the AUC's variance.

    >>> auc, terms = auc_terms(np.array([True, False, True, False]), np.array([0.9, 0.1, 0.4, 0.5]))
    >>> auc, round(float(terms.mean()), 12)
    (0.75, 0.0)
    """
    pos, neg = score[positive], score[~positive]
    m, q = len(pos), len(neg)
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    below = np.searchsorted(neg_sorted, pos, "left")
    placement_pos = (below + 0.5 * (np.searchsorted(neg_sorted, pos, "right") - below)) / q
    right = np.searchsorted(pos_sorted, neg, "right")
    placement_neg = ((m - right) + 0.5 * (right - np.searchsorted(pos_sorted, neg, "left"))) / m
    auc = float(placement_pos.mean())
    terms = np.empty(len(score))
    terms[positive] = (placement_pos - auc) * len(score) / m
    terms[~positive] = (placement_neg - auc) * len(score) / q
    return auc, terms


class AucCS(_Running):
    """Asymptotic CS for Δ of ROC AUC (binary, or the macro one-vs-rest mean over classes), one run.

    Ranks change with every example, so the scores are kept and each :meth:`look` recomputes
    (O(n log n)); the running intersection is over looks (the evaluator looks at each ``decision()``).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> cs = AucCS(num_classes=2)
    >>> cs.update(y, rng.random(2000), np.where(y == 1, 0.3, 0.0) + rng.random(2000))
    >>> cs.look(); cs.verdicts()[0]
    np.str_('promote')
    """

    method = "asymptotic"

    def __init__(
        self, alpha: float = 0.05, threshold: float = 0.0, horizon: int = 5000, min_n: int = 100, num_classes: int = 2
    ):
        super().__init__(alpha, threshold, 1)
        self.min_n, self.num_classes = int(min_n), int(num_classes)
        self.rho = mixture_rho(self.alpha, int(horizon))
        self.labels: list[np.ndarray] = []
        self.scores_live: list[np.ndarray] = []
        self.scores_candidate: list[np.ndarray] = []
        self.delta = self.sd = np.zeros(1)
        self.values = (math.nan, math.nan)  # (candidate's AUC, live's) at the last look

    def update(self, labels: Any, scores_live: Any, scores_candidate: Any) -> None:
        """Keep a batch: labels ``(b,)`` and each model's class scores ``(b, num_classes)`` (or, binary, the
        positive class's ``(b,)``)."""

        def rows(scores: Any) -> np.ndarray:
            scores = np.asarray(scores, dtype=np.float64)
            return np.stack([1 - scores, scores], 1) if scores.ndim == 1 else scores

        self.labels.append(np.asarray(labels, dtype=np.int64))
        self.scores_live.append(rows(scores_live))
        self.scores_candidate.append(rows(scores_candidate))
        self.n += len(self.labels[-1])

    def _stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.labels) > 1:  # amortised: concatenate once per look, not per update
            self.labels = [np.concatenate(self.labels)]
            self.scores_live = [np.concatenate(self.scores_live)]
            self.scores_candidate = [np.concatenate(self.scores_candidate)]
        return self.labels[0], self.scores_live[0], self.scores_candidate[0]

    def look(self) -> None:
        """Recompute Δ̂ and σ̂ on everything kept and fold the bounds into the running intersection."""
        if not self.labels:
            return
        y, live, candidate = self._stacked()
        classes = [1] if self.num_classes == 2 else range(self.num_classes)
        if any((y == k).all() or not (y == k).any() for k in classes):
            return  # a class without positives or negatives: AUC is not defined yet
        auc_c = auc_l = 0.0
        terms = np.zeros(len(y))
        for k in classes:
            value_c, terms_c = auc_terms(y == k, candidate[:, k])
            value_l, terms_l = auc_terms(y == k, live[:, k])
            auc_c, auc_l = auc_c + value_c / len(classes), auc_l + value_l / len(classes)
            terms += (terms_c - terms_l) / len(classes)
        counts = np.array([len(y)])
        delta, sd = np.array([[auc_c - auc_l]]), np.array([[math.sqrt(np.mean(terms**2))]])
        self._record(*asymptotic_bounds(delta, sd, counts, self.alpha, self.rho, self.min_n), counts)
        self.delta, self.sd, self.values = delta[:, 0], sd[:, 0], (auc_c, auc_l)


def confidence_sequence(
    metric: str,
    *,
    average: str | None = None,
    num_classes: int = 2,
    alpha: float = 0.05,
    threshold: float = 0.0,
    horizon: int = 5000,
    min_n: int = 100,
    runs: int = 1,
    grid: np.ndarray | None = None,
) -> tuple[PairedMetric | None, BettingCS | AsymptoticCS | AucCS]:
    """The paired metric (``None`` for roc_auc) and the CS the evaluator (and the bench) feeds for ``metric``:
    betting for accuracy, the asymptotic CS for the rest.

    >>> metric, cs = confidence_sequence('f1_score', average='binary')
    >>> type(cs).__name__, cs.exact
    ('AsymptoticCS', False)
    """
    from .metrics import get_metric, paired_metric

    name = get_metric(metric).name
    if name == "roc_auc":
        return None, AucCS(alpha, threshold, horizon, min_n, num_classes)
    paired = paired_metric(name, average, num_classes)
    if name == "accuracy":
        return paired, BettingCS(alpha, threshold, horizon, runs, grid)
    return paired, AsymptoticCS(paired, alpha, threshold, horizon, runs, min_n)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided Clopper–Pearson interval for a binomial share; the bench quotes its upper end.

    >>> [round(v, 4) for v in clopper_pearson(50, 2000)]
    [0.0186, 0.0328]
    """
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high
