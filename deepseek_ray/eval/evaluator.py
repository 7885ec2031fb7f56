"""``ShadowModeEvaluator``: compare a candidate model with the live one, offline on labelled data or online as
labels arrive, and decide whether to promote it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import CLASSIFICATION, REGRESSION, Outputs, as_outputs, get_metric, resolve_average
from .predictors import as_predictor
from .sequential import AucCS, BettingCS, confidence_sequence

if TYPE_CHECKING:
    from .offline import EvaluationReport

VERDICTS = ("promote", "keep", "need_more_data")


def _finite_or_none(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


@dataclass
class Decision:
    """Where the online comparison stands.

    ``verdict``: ``promote`` (lower > threshold), ``keep`` (upper < threshold) or ``need_more_data``; once
    reached it stands (``decided_at``: the labelled count at which it was). ``delta``: Δ̂ = candidate's metric −
    live's (positive: candidate better, also for MAE/RMSE). ``lower``/``upper``: the anytime-valid bounds, each
    a one-sided 1 − α confidence sequence. ``n``: labelled pairs. ``agreement``: share of pairs on which the
    two predicted the same class (regression: within ``tolerance`` of the live value, relative).
    ``exact``: whether the bounds are non-asymptotic (accuracy) or asymptotic (the rest).

    >>> Decision('keep', -0.1, -0.2, -0.05, 500, 0.9, 0.8, 0.85, 'accuracy', 0.0, 0.05, True).to_dict()['verdict']
    'keep'
    """

    verdict: str
    delta: float
    lower: float
    upper: float
    n: int
    live_metric: float
    candidate_metric: float
    agreement: float
    metric: str
    threshold: float
    alpha: float
    exact: bool
    method: str = ""
    decided_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers become ``None``)."""
        return {key: _finite_or_none(value) for key, value in asdict(self).items()}


class ShadowModeEvaluator:
    """Compare a candidate (``new_model``) with the live model (``old_model``) on one metric, and decide.

    **The decision.** Δ = candidate's metric − live's, signed so that positive means the candidate is better
    (for MAE and RMSE, Δ = live's error − candidate's). H0: Δ ≤ ``threshold``. ``promote`` when the lower
    confidence bound of Δ exceeds ``threshold``; ``keep`` when the upper bound falls below it; else
    ``need_more_data``. ``threshold=0`` asks for plain superiority; ``threshold=0.02`` asks that the candidate
    be better by more than 0.02 (in the metric's units: 2 points of accuracy or F1) — a margin, not a
    p-value; a negative threshold asks for non-inferiority (worse by less than that). ``alpha`` is each
    error's rate: P(promote ever | Δ ≤ threshold) ≤ α and P(keep ever | Δ ≥ threshold) ≤ α, however often
    :meth:`decision` is called — exactly for accuracy, asymptotically for the other metrics (each bound is
    a one-sided 1 − α *confidence sequence*, checked at every label; the two together cover Δ at every
    count with probability ≥ 1 − 2α).

    **Exact vs asymptotic.** accuracy: exact (betting confidence sequence on the paired differences,
    Waudby-Smith & Ramdas 2023). f1_score, precision, recall (binary or macro), roc_auc, mae, rmse:
    asymptotic (normal-mixture confidence sequence on the delta-method terms, Waudby-Smith et al. 2021),
    counted from ``min_n`` labels. ``horizon`` is the labelled count at which the bounds are tightest. See
    :mod:`deepseek_ray.eval.sequential`.

    **Online.** :meth:`update` takes batches of (live predictions, candidate predictions, labels) in label
    arrival order — class indices, probability rows, or regression values — in O(batch) (roc_auc keeps the
    scores and re-ranks at each :meth:`decision`). The state pickles (the models are left out).

    **Offline.** :meth:`evaluate` runs both models on a labelled file, a registered dataset's split, a
    ``DatasetSplits`` or an ``(x, y)`` pair, and reports the metrics, McNemar's test and a paired bootstrap.

    ``task`` is ``classification`` or ``regression`` (implied by the metric); ``num_classes`` fixes the classes
    (else read from the first batch: probability rows' width, or the largest class seen + 1, at least 2).

    >>> ev = ShadowModeEvaluator(metric='accuracy', threshold=0.0, alpha=0.05)
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 4000)
    >>> live = np.where(rng.random(4000) < 0.80, y, 1 - y)
    >>> candidate = np.where(rng.random(4000) < 0.88, y, 1 - y)
    >>> ev.update(live, candidate, y).decision().verdict
    'promote'
    """

    def __init__(
        self,
        new_model: Any = None,
        old_model: Any = None,
        metric: str = "accuracy",
        threshold: float = 0.0,
        alpha: float = 0.05,
        average: str | None = None,
        *,
        task: str | None = None,
        num_classes: int | None = None,
        horizon: int = 5000,
        min_n: int = 100,
        tolerance: float = 0.05,
        tracking_uri: str | None = None,
    ):
        self.spec = get_metric(metric)
        if task is not None and task != self.spec.task:
            raise ValueError(f"metric {self.spec.name!r} is for {self.spec.task}, not {task}")
        if not 0 < alpha <= 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5], got {alpha}")
        self.candidate = as_predictor(new_model, tracking_uri=tracking_uri)
        self.live = as_predictor(old_model, tracking_uri=tracking_uri)
        self.metric, self.task = self.spec.name, self.spec.task
        self.threshold, self.alpha, self.average = float(threshold), float(alpha), average
        self.num_classes = num_classes
        self.horizon, self.min_n, self.tolerance = int(horizon), int(min_n), float(tolerance)
        self.reset()

    def reset(self) -> None:
        """Forget every pair seen (the models stay)."""
        self.n, self.agreed = 0, 0
        self._paired: Any = None
        self._cs: Any = None
        self._sum: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------- online
    def update(self, live_predictions: Any, candidate_predictions: Any, labels: Any) -> ShadowModeEvaluator:
        """Add labelled pairs, in the order their labels arrived; returns the evaluator (for chaining)."""
        live, candidate = as_outputs(live_predictions, self.task), as_outputs(candidate_predictions, self.task)
        y = np.asarray(labels)
        y = y.reshape(-1) if self.task == REGRESSION else y.astype(np.int64).reshape(-1)
        if not len(live) == len(candidate) == len(y):
            raise ValueError(f"got {len(live)} live and {len(candidate)} candidate predictions for {len(y)} labels")
        if len(y) == 0:
            return self
        if self.spec.needs_scores and (live.scores is None or candidate.scores is None):
            raise ValueError("roc_auc needs scores: pass probability rows (or positive-class scores), not classes")
        if self._cs is None:
            self._start(live, candidate, y)
        self._check_classes(live, candidate, y)  # before any state changes: a refused batch leaves none
        self.agreed += int(self._agreeing(live, candidate).sum())
        if isinstance(self._cs, AucCS):
            self._cs.update(y, live.scores, candidate.scores)
        else:
            z = self._paired.features(y, self._answers(live), self._answers(candidate))
            self._cs.update_features(z[None])
            self._sum = z.sum(0) if self._sum is None else self._sum + z.sum(0)
        self.n += len(y)
        return self

    def _answers(self, outputs: Outputs) -> np.ndarray:
        return outputs.values if self.task == REGRESSION else outputs.classes  # type: ignore[return-value]

    def _start(self, live: Outputs, candidate: Outputs, y: np.ndarray) -> None:
        """Fix the classes and the average, and make the confidence sequence (at the first batch)."""
        if self.task == CLASSIFICATION and self.num_classes is None:
            widths = [o.scores.shape[1] for o in (live, candidate) if o.scores is not None]
            seen = max(int(y.max()), int(live.classes.max()), int(candidate.classes.max())) + 1  # type: ignore[union-attr]
            self.num_classes = max([2, seen, *widths])
        self.average = resolve_average(self.spec, self.num_classes or 2, self.average)
        self._paired, self._cs = confidence_sequence(
            self.metric,
            average=self.average,
            num_classes=self.num_classes or 2,
            alpha=self.alpha,
            threshold=self.threshold,
            horizon=self.horizon,
            min_n=self.min_n,
        )

    def _check_classes(self, live: Outputs, candidate: Outputs, y: np.ndarray) -> None:
        if self.task != CLASSIFICATION or self.metric == "accuracy":
            return  # accuracy compares classes only: any class index will do
        assert self.num_classes is not None and live.classes is not None and candidate.classes is not None
        top = max(int(y.max()), int(live.classes.max()), int(candidate.classes.max()))
        if top >= self.num_classes or min(int(y.min()), int(live.classes.min()), int(candidate.classes.min())) < 0:
            raise ValueError(
                f"saw class {top}, but the evaluator was set up for classes 0…{self.num_classes - 1} "
                "(from the first batch): pass num_classes="
            )

    def _agreeing(self, live: Outputs, candidate: Outputs) -> np.ndarray:
        if self.task == REGRESSION:
            return np.isclose(candidate.values, live.values, rtol=self.tolerance, atol=0.0)  # type: ignore[arg-type]
        return np.asarray(live.classes == candidate.classes)

    def decision(self) -> Decision:
        """Where the comparison stands now (see :class:`Decision`)."""
        cs = self._cs
        exact = self.metric == "accuracy"
        if cs is None:
            nan = math.nan
            method = "betting" if exact else "asymptotic"
            return Decision("need_more_data", nan, -math.inf, math.inf, 0, nan, nan, nan, self.metric,
                            self.threshold, self.alpha, exact, method)  # fmt: skip
        if isinstance(cs, AucCS):
            cs.look()
            delta, (value_c, value_l) = float(cs.delta[0]), cs.values
        else:
            mean = self._sum / self.n  # type: ignore[operator]
            delta = float(self._paired(mean)[0])
            value_c, value_l = (float(v) for v in self._paired.values(mean))
        lower, upper = float(cs.lower[0]), float(cs.upper[0])
        if self.task == CLASSIFICATION:  # Δ of a [0, 1] metric lies in [−1, 1]
            lower, upper = max(lower, -1.0), min(upper, 1.0)
        return Decision(
            verdict=str(cs.verdicts()[0]),
            delta=delta,
            lower=lower,
            upper=upper,
            n=self.n,
            live_metric=float(value_l),
            candidate_metric=float(value_c),
            agreement=self.agreed / self.n,
            metric=self.metric,
            threshold=self.threshold,
            alpha=self.alpha,
            exact=isinstance(cs, BettingCS),
            method=cs.method,
            decided_at=int(cs.decided_at()[0]),
        )

    # ------------------------------------------------------------------------------------------ offline
    def predict(self, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Both models' outputs on a batch: ``(live's, candidate's)``."""
        if self.live is None or self.candidate is None:
            raise ValueError("this needs both models: pass new_model= and old_model=")
        return self.live(inputs), self.candidate(inputs)

    def evaluate(
        self, data: Any, *, label: str = "label", split: str = "test", seed: int = 0, resamples: int = 1000
    ) -> EvaluationReport:
        """Run both models on labelled data and compare them once (see :func:`.offline.evaluate`)."""
        from .offline import evaluate

        return evaluate(self, data, label=label, split=split, seed=seed, resamples=resamples)

    def fresh(self) -> ShadowModeEvaluator:
        """An evaluator with the same settings and models, and no pairs seen."""
        copy = object.__new__(ShadowModeEvaluator)
        copy.__dict__.update(self.__dict__)
        copy.reset()
        copy.average, copy.num_classes = self.average, self.num_classes
        return copy

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["candidate"] = state["live"] = None  # sessions and modules do not pickle: the statistics do
        return state
