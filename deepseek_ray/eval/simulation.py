"""Simulated shadow comparisons with a known true Δ: the harness behind ``tests/test_eval.py`` and
``bench/bench_shadow_stats.py`` (and a way to ask "how many labels will this need?" before a rollout).

A :class:`PairLaw` is a joint law of (label, live's class, candidate's class) over two classes; runs draw
from it independently, and :func:`repeated_looks` feeds them, vectorised over runs, through the very
confidence sequences the evaluator uses (:func:`.sequential.confidence_sequence`), looking every
``every`` labels; the naive fixed-sample Wald test is re-checked at the same looks as the control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import Ratio, as_outputs, get_metric, score
from .sequential import AsymptoticCS, BettingCS, confidence_sequence, fixed_sample_bounds


@dataclass(frozen=True)
class PairLaw:
    """``cells[y, live, candidate]``: the probability of each (label, live's class, candidate's class).

    >>> law = accuracy_law(delta=0.02, disagreement=0.2)
    >>> [round(v, 6) for v in law.population('accuracy')], round(law.disagreement, 6)
    ([0.82, 0.8], 0.2)
    """

    cells: np.ndarray

    @property
    def disagreement(self) -> float:
        """The share of examples on which the two models predict different classes."""
        return float(self.cells[:, 0, 1].sum() + self.cells[:, 1, 0].sum())

    def population(self, metric: str) -> tuple[float, float]:
        """(candidate's, live's) metric on the infinite population: each metric's ratio at the true means."""
        name = get_metric(metric).name
        y, live, cand = np.indices((2, 2, 2)).reshape(3, -1)
        weights = self.cells.reshape(-1)
        if name == "accuracy":
            return float(weights @ (cand == y)), float(weights @ (live == y))
        paired = Ratio(name, "binary")
        mean = weights @ paired.features(y, live, cand)
        value_c, value_l = paired.values(mean)
        return float(value_c), float(value_l)

    def draw(self, rng: np.random.Generator, runs: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``runs × n`` independent examples: labels, live's classes, candidate's classes."""
        cell = np.searchsorted(np.cumsum(self.cells.reshape(-1)), rng.random((runs, n)), side="right")
        cell = np.minimum(cell, 7)  # guards the cumulative sum's last rounding
        return cell // 4, (cell // 2) % 2, cell % 2


def accuracy_law(delta: float, disagreement: float, live_accuracy: float = 0.8, prevalence: float = 0.5) -> PairLaw:
    """Two binary classifiers with accuracies ``live_accuracy + delta`` and ``live_accuracy`` that disagree on
    ``disagreement`` of examples: the candidate alone is right on ``(disagreement + delta) / 2``, the live
    model alone on ``(disagreement − delta) / 2``; a wrong answer is the other class, so disagreeing
    means exactly one is right.

    >>> [round(v, 12) for v in accuracy_law(0.04, 0.1).population('accuracy')]
    [0.84, 0.8]
    """
    only_candidate, only_live = (disagreement + delta) / 2, (disagreement - delta) / 2
    both = live_accuracy - only_live
    neither = max(1 - both - only_candidate - only_live, 0.0)
    if min(only_candidate, only_live, both, neither) < -1e-12:
        raise ValueError("no such pair of classifiers: check delta, disagreement and live_accuracy")
    cells = np.zeros((2, 2, 2))
    for y in (0, 1):
        share = prevalence if y else 1 - prevalence
        for live_right, cand_right, p in ((1, 1, both), (1, 0, only_live), (0, 1, only_candidate), (0, 0, neither)):
            cells[y, y if live_right else 1 - y, y if cand_right else 1 - y] += share * p
    return PairLaw(cells)


def f1_law(delta: float, disagreement: float, prevalence: float = 0.3, tpr: float = 0.7, fpr: float = 0.15) -> PairLaw:
    """Two binary classifiers whose population F1 differ by exactly ``delta`` and that disagree on
    ``disagreement`` of examples.

    The live model has true- and false-positive rates ``tpr``, ``fpr`` at ``prevalence``. The candidate
    copies it except that it *fixes* (flips) each of live's errors with probability ``f`` and *breaks* each of
    its right answers with probability ``b``; disagreement is then ``f·W + b·(1 − W)`` (``W``: live's error
    rate), so ``b`` follows from ``f``, and F1 = 2TP / (2TP + FP + FN) of the candidate rises with ``f``:
    ``f`` is solved (Brent) so that F1(candidate) − F1(live) = ``delta`` to 1e-12.

    >>> law = f1_law(0.02, 0.2)
    >>> candidate, live = law.population('f1_score')
    >>> round(candidate - live, 10), round(law.disagreement, 10)
    (0.02, 0.2)
    """
    from scipy.optimize import brentq

    live = {(1, 1): prevalence * tpr, (1, 0): prevalence * (1 - tpr), (0, 1): (1 - prevalence) * fpr}
    live[(0, 0)] = (1 - prevalence) * (1 - fpr)
    wrong = live[(1, 0)] + live[(0, 1)]

    def law(fix: float) -> PairLaw:
        brk = (disagreement - fix * wrong) / (1 - wrong)
        cells = np.zeros((2, 2, 2))
        for (y, pred), p in live.items():
            flip = brk if pred == y else fix
            cells[y, pred, pred] += p * (1 - flip)
            cells[y, pred, 1 - pred] += p * flip
        return PairLaw(cells)

    def gap(fix: float) -> float:
        candidate, live_f1 = law(fix).population("f1_score")
        return candidate - live_f1 - delta

    low = max(0.0, (disagreement - (1 - wrong)) / wrong)
    high = min(1.0, disagreement / wrong)
    if gap(low) > 0 or gap(high) < 0:
        raise ValueError(f"no candidate differs by {delta} in F1 at disagreement {disagreement}")
    return law(brentq(gap, low, high, xtol=1e-14))


@dataclass
class LookResult:
    """Per run, the labelled count at which each test first promoted / kept (0: never).

    >>> LookResult(np.array([0, 50]), np.zeros(2), np.array([50, 50]), np.array([50])).runs
    2
    """

    promoted_at: np.ndarray
    kept_at: np.ndarray
    naive_promoted_at: np.ndarray
    looks: np.ndarray  # the labelled counts looked at

    @property
    def runs(self) -> int:
        return len(self.promoted_at)


def repeated_looks(
    law: PairLaw,
    metric: str,
    threshold: float,
    *,
    alpha: float = 0.05,
    runs: int = 1000,
    every: int = 50,
    until: int = 5000,
    seed: int = 0,
    horizon: int = 5000,
    min_n: int = 100,
) -> LookResult:
    """Draw ``runs`` independent label streams from ``law`` and look every ``every`` labels up to ``until``:
    the evaluator's CS for ``metric`` (its verdict counted at the looks) and the naive one-sided Wald test at
    level α re-checked at each look (``Δ̂ − z_{1−α} σ̂/√n > threshold``, σ̂ from the same delta-method terms).

    >>> result = repeated_looks(accuracy_law(0.1, 0.2), 'accuracy', 0.0, runs=20, until=500)
    >>> bool((result.promoted_at > 0).mean() > 0.5)
    True
    """
    rng = np.random.default_rng(seed)
    average = "binary" if get_metric(metric).averaged else None
    paired, cs = confidence_sequence(
        metric, average=average, alpha=alpha, threshold=threshold, horizon=horizon, min_n=min_n, runs=runs,
        grid=np.array([threshold]),  # verdicts are per grid value: the threshold's alone is the evaluator's
    )  # fmt: skip
    assert paired is not None and isinstance(cs, BettingCS | AsymptoticCS)
    naive = cs if isinstance(cs, AsymptoticCS) else AsymptoticCS(paired, alpha, threshold, horizon, runs, min_n)
    promoted, kept, naive_promoted = (np.zeros(runs, dtype=np.int64) for _ in range(3))
    looks = np.arange(every, until + 1, every)
    for n in looks:
        z = paired.features(*law.draw(rng, runs, every))
        cs.update_features(z)
        if naive is not cs:
            naive.update_features(z)
        # Looks happen here: a crossing between two looks counts at the next one (the evaluator's own bounds
        # are checked at every label, which can only decide sooner).
        promoted = np.where((promoted == 0) & (cs.promoted_at > 0), n, promoted)
        kept = np.where((kept == 0) & (cs.kept_at > 0), n, kept)
        wald_lower, _ = fixed_sample_bounds(naive.delta, naive.sd, int(n), alpha)
        naive_promoted = np.where((naive_promoted == 0) & (wald_lower > threshold), n, naive_promoted)
    return LookResult(promoted, kept, naive_promoted, looks)


def check_population(law: PairLaw, metric: str, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """scikit-learn's metric of both models on ``n`` draws (a check of :meth:`PairLaw.population`).

    >>> [round(v, 2) for v in check_population(accuracy_law(0.02, 0.2), 'accuracy')]
    [0.82, 0.8]
    """
    y, live, cand = law.draw(np.random.default_rng(seed), 1, n)
    average = "binary" if get_metric(metric).averaged else None
    return (
        score(metric, y[0], as_outputs(cand[0], "classification"), average=average),
        score(metric, y[0], as_outputs(live[0], "classification"), average=average),
    )
