"""Metrics of one model (scikit-learn), and of a pair as a smooth function of per-pair feature means.

Δ is always signed so that a positive Δ means the candidate is better:

==============  ==============  ======  ====================================  =========================
metric          task            better  Δ                                     per-pair features (each)
==============  ==============  ======  ====================================  =========================
``accuracy``    classification  higher  acc(candidate) − acc(live)            ``1[right]``
``f1_score``    classification  higher  F1(candidate) − F1(live)              ``1[tp]``, ``1[pred] + 1[y]``
``precision``   classification  higher  precision(candidate) − …(live)        ``1[tp]``, ``1[pred]``
``recall``      classification  higher  recall(candidate) − recall(live)      ``1[tp]``, ``1[y]``
``roc_auc``     classification  higher  AUC(candidate) − AUC(live)            (ranks: see ``sequential``)
``mae``         regression      lower   MAE(live) − MAE(candidate)            ``|error|``
``rmse``        regression      lower   RMSE(live) − RMSE(candidate)          ``error²``
==============  ==============  ======  ====================================  =========================

F1, precision and recall are ``binary`` (positive class 1) when there are two classes, ``macro`` (the
unweighted mean over classes ``0 … K−1``, the same class list for both models) otherwise, unless ``average``
says which. Each is ``Σ num / Σ den`` per class — a ratio of means — so its value at the features' mean is
exactly scikit-learn's, and the delta method gives its variance from the features' covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CLASSIFICATION, REGRESSION = "classification", "regression"
AVERAGES = ("binary", "macro")


@dataclass(frozen=True)
class MetricSpec:
    """What the evaluator needs to know of a metric: its task, direction, and whether it reads scores.

    >>> METRICS['roc_auc'].needs_scores, METRICS['rmse'].task
    (True, 'regression')
    """

    name: str
    task: str
    higher_is_better: bool = True
    needs_scores: bool = False
    averaged: bool = False  # takes ``average`` (binary/macro)


METRICS = {
    spec.name: spec
    for spec in (
        MetricSpec("accuracy", CLASSIFICATION),
        MetricSpec("f1_score", CLASSIFICATION, averaged=True),
        MetricSpec("precision", CLASSIFICATION, averaged=True),
        MetricSpec("recall", CLASSIFICATION, averaged=True),
        MetricSpec("roc_auc", CLASSIFICATION, needs_scores=True, averaged=True),
        MetricSpec("mae", REGRESSION, higher_is_better=False),
        MetricSpec("rmse", REGRESSION, higher_is_better=False),
    )
}
ALIASES = {"f1": "f1_score", "auc": "roc_auc", "precision_score": "precision", "recall_score": "recall"}


def get_metric(name: str) -> MetricSpec:
    """The spec of a metric by name (a few aliases accepted).

    >>> get_metric('f1').name, get_metric('mae').higher_is_better
    ('f1_score', False)
    >>> get_metric('bleu')
    Traceback (most recent call last):
    ...
    ValueError: unknown metric 'bleu'; choose one of accuracy, f1_score, precision, recall, roc_auc, mae, rmse
    """
    spec = METRICS.get(ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return spec


def resolve_average(spec: MetricSpec, num_classes: int, average: str | None) -> str | None:
    """``binary`` for two classes, else ``macro``, unless ``average`` says which; ``None`` when not averaged.

    >>> resolve_average(get_metric('f1_score'), 2, None), resolve_average(get_metric('f1_score'), 10, None)
    ('binary', 'macro')
    """
    if not spec.averaged:
        return None
    chosen = average or ("binary" if num_classes <= 2 else "macro")
    if chosen not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if chosen == "binary" and num_classes > 2:
        raise ValueError(f"average='binary' needs two classes, the data has {num_classes}; use average='macro'")
    return chosen


@dataclass
class Outputs:
    """A batch of one model's predictions, read once: class indices and, when given, class scores
    (probability rows); or regression values.

    >>> len(Outputs(classes=np.array([0, 1, 1])))
    3
    """

    classes: np.ndarray | None = None
    scores: np.ndarray | None = None
    values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values if self.values is not None else self.classes)  # type: ignore[arg-type]


def as_outputs(predictions: Any, task: str) -> Outputs:
    """Read predictions: class indices (1-D integers), probability or logit rows (2-D floats; logits go through a
    softmax, the class is the argmax), a positive-class score per example (1-D floats in [0, 1], binary), or
    regression values (1-D, or one column).

    >>> as_outputs([[0.2, 0.8], [0.9, 0.1]], 'classification').classes.tolist()
    [1, 0]
    >>> as_outputs([0, 2, 1], 'classification').scores is None
    True
    >>> as_outputs([[1.5], [2.0]], 'regression').values.tolist()
    [1.5, 2.0]
    """
    array = np.asarray(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 and not (array.ndim == 2 and task == CLASSIFICATION):
        raise ValueError(f"predictions must be 1-D (or probability rows), got shape {list(array.shape)}")
    if task == REGRESSION:
        return Outputs(values=array.astype(np.float64))
    if array.ndim == 2:
        scores = array.astype(np.float64)
        is_probability = np.all((scores >= 0) & (scores <= 1)) and np.allclose(scores.sum(1), 1.0, atol=1e-3)
        if not is_probability:  # logits: the scores must be comparable across examples for AUC
            shifted = np.exp(scores - scores.max(1, keepdims=True))
            scores = shifted / shifted.sum(1, keepdims=True)
        return Outputs(classes=scores.argmax(1), scores=scores)
    if array.dtype.kind in "iub" or (array.size and np.all(array == np.round(array))):
        return Outputs(classes=array.astype(np.int64))
    if np.any((array < 0) | (array > 1)):
        raise ValueError("1-D float predictions are read as the positive class's score and must lie in [0, 1]")
    score = array.astype(np.float64)
    return Outputs(classes=(score >= 0.5).astype(np.int64), scores=np.stack([1 - score, score], 1))


def score(
    metric: str, labels: Any, outputs: Outputs, *, average: str | None = None, num_classes: int | None = None
) -> float:
    """One model's metric with scikit-learn; macro averages run over classes ``0 … num_classes−1``.

    >>> y = np.array([0, 1, 1, 0])
    >>> score('f1_score', y, as_outputs([0, 1, 0, 0], 'classification'), average='binary')
    0.6666666666666666
    >>> score('rmse', [1.0, 2.0], as_outputs([1.0, 4.0], 'regression'))
    1.4142135623730951
    """
    from sklearn import metrics as sk

    spec = get_metric(metric)
    y = np.asarray(labels)
    if spec.task == REGRESSION:
        if spec.name == "mae":
            return float(sk.mean_absolute_error(y, outputs.values))
        return float(np.sqrt(sk.mean_squared_error(y, outputs.values)))
    classes = list(range(num_classes)) if num_classes else None
    if spec.name == "accuracy":
        return float(sk.accuracy_score(y, outputs.classes))
    if spec.name == "roc_auc":
        if outputs.scores is None:
            raise ValueError("roc_auc needs scores: pass probability rows (or positive-class scores), not classes")
        if average == "binary":
            return float(sk.roc_auc_score(y, outputs.scores[:, 1]))
        return float(sk.roc_auc_score(y, outputs.scores, multi_class="ovr", average="macro", labels=classes))
    function = {"f1_score": sk.f1_score, "precision": sk.precision_score, "recall": sk.recall_score}[spec.name]
    labels_arg = classes if average == "macro" else None
    return float(function(y, outputs.classes, average=average, labels=labels_arg, zero_division=0))


# --------------------------------------------------------------------------------------------- paired
class PairedMetric:
    """Δ as a smooth function of the mean ``z̄`` of per-pair features ``z = [candidate's, live's]``.

    ``one(mean)`` is one model's metric at its half of the means, with its gradient; Δ and its gradient
    follow (sign flipped for a lower-is-better metric). The delta method turns the gradient and the
    features' covariance into Δ's variance (``sequential.AsymptoticCS``).

    >>> metric = paired_metric('recall', 'binary')
    >>> z = metric.features([1, 1, 0], live=[1, 0, 0], candidate=[1, 1, 1])
    >>> delta, grad = metric(z.mean(0))
    >>> float(delta), grad.shape
    (0.5, (4,))
    """

    half: int = 1
    higher_is_better = True

    @property
    def size(self) -> int:
        return 2 * self.half

    def model_features(self, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def one(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def features(self, labels: Any, live: Any, candidate: Any) -> np.ndarray:
        """Per-pair features ``(..., n, size)`` from labels and the two models' classes (or values) ``(..., n)``."""
        y = np.asarray(labels)
        return np.concatenate(
            [self.model_features(y, np.asarray(candidate)), self.model_features(y, np.asarray(live))], -1
        )

    def values(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate's metric, live's metric) at the features' mean."""
        return self.one(mean[..., : self.half])[0], self.one(mean[..., self.half :])[0]

    def __call__(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Δ and its gradient with respect to the mean."""
        value_c, grad_c = self.one(mean[..., : self.half])
        value_l, grad_l = self.one(mean[..., self.half :])
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (value_c - value_l), sign * np.concatenate([grad_c, -grad_l], -1)


class Accuracy(PairedMetric):
    """``1[right]`` per model; Δ is the mean of ``d = 1[candidate right] − 1[live right]``.

    >>> metric = Accuracy()
    >>> z = metric.features([1, 0, 1], live=[1, 1, 1], candidate=[1, 0, 0])
    >>> metric(z.mean(0))[0].round(3)
    np.float64(0.0)
    """

    def model_features(self, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return (predicted == labels).astype(np.float64)[..., None]

    def one(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mean[..., 0], np.ones_like(mean)


class Ratio(PairedMetric):
    """F1, precision or recall, binary (positive class 1) or macro over ``num_classes``: per class
    ``weight · Σ num / Σ den`` (0 where ``den`` is 0, as scikit-learn's ``zero_division=0``).

    >>> metric = Ratio('f1_score', 'binary')
    >>> z = metric.features([0, 1, 1, 0], live=[0, 1, 0, 0], candidate=[1, 1, 1, 0])
    >>> [round(float(v), 4) for v in metric.values(z.mean(0))]
    [0.8, 0.6667]
    """

    def __init__(self, metric: str, average: str, num_classes: int = 2):
        self.metric = get_metric(metric).name
        self.classes = np.array([1]) if average == "binary" else np.arange(num_classes)
        self.half = 2 * len(self.classes)
        self.weight = 2.0 if self.metric == "f1_score" else 1.0

    def model_features(self, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        pred = (predicted[..., None] == self.classes).astype(np.float64)
        true = (labels[..., None] == self.classes).astype(np.float64)
        den = {"f1_score": pred + true, "precision": pred, "recall": true}[self.metric]
        return np.concatenate([pred * true, den], -1)

    def one(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.classes)
        num, den = mean[..., :k], mean[..., k:]
        safe = np.where(den > 0, den, 1.0)
        ratio = np.where(den > 0, num / safe, 0.0)
        grad_num = np.where(den > 0, self.weight / (k * safe), 0.0)
        grad_den = np.where(den > 0, -self.weight * ratio / (k * safe), 0.0)
        return self.weight * ratio.mean(-1), np.concatenate([grad_num, grad_den], -1)


class MeanAbsoluteError(PairedMetric):
    """``|error|`` per model; Δ = MAE(live) − MAE(candidate).

    >>> metric = MeanAbsoluteError()
    >>> float(metric(metric.features([0.0, 0.0], live=[1.0, -1.0], candidate=[0.5, 0.5]).mean(0))[0])
    0.5
    """

    higher_is_better = False

    def model_features(self, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return np.abs(predicted - labels).astype(np.float64)[..., None]

    def one(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mean[..., 0], np.ones_like(mean)


class RootMeanSquaredError(PairedMetric):
    """``error²`` per model; Δ = RMSE(live) − RMSE(candidate), RMSE = √mean(error²).

    >>> metric = RootMeanSquaredError()
    >>> float(metric(metric.features([0.0, 0.0], live=[2.0, 2.0], candidate=[1.0, 1.0]).mean(0))[0])
    1.0
    """

    higher_is_better = False

    def model_features(self, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return ((predicted - labels) ** 2).astype(np.float64)[..., None]

    def one(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        root = np.sqrt(np.maximum(mean[..., 0], 0.0))
        return root, np.where(root > 0, 0.5 / np.where(root > 0, root, 1.0), 0.0)[..., None]


def paired_metric(metric: str, average: str | None = None, num_classes: int = 2) -> PairedMetric:
    """The :class:`PairedMetric` of a metric (not ``roc_auc``: its terms are ranks, not means).

    >>> paired_metric('f1_score', 'macro', num_classes=3).size
    12
    """
    name = get_metric(metric).name
    if name == "accuracy":
        return Accuracy()
    if name == "mae":
        return MeanAbsoluteError()
    if name == "rmse":
        return RootMeanSquaredError()
    if name == "roc_auc":
        raise ValueError("roc_auc is a rank statistic: use sequential.AucCS")
    return Ratio(name, average or "binary", num_classes)
