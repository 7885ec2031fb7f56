"""The offline comparison: both models on one labelled set, looked at once.

One look at a fixed sample needs no sequential correction, so the offline verdict comes from a paired
bootstrap (percentile bounds at α on each side, seeded); the report also carries McNemar's exact test
(classification: H0 equal accuracy, a two-sided binomial test on the discordant pairs) and the online
decision the same pairs would have given, fed in a seeded random order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .evaluator import Decision, _finite_or_none
from .metrics import CLASSIFICATION, REGRESSION, as_outputs, score
from .sequential import auc_terms

if TYPE_CHECKING:
    from .evaluator import ShadowModeEvaluator

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")


@dataclass
class EvaluationReport:
    """What :meth:`ShadowModeEvaluator.evaluate` found. ``lower``/``upper`` are the paired bootstrap's
    percentile bounds of Δ (α on each side); ``verdict`` is read from them as online (promote: lower >
    threshold; keep: upper < threshold). ``mcnemar`` is ``None`` for regression."""

    metric: str
    n: int
    live_metric: float
    candidate_metric: float
    delta: float
    threshold: float
    alpha: float
    verdict: str
    lower: float
    upper: float
    agreement: float
    bootstrap: dict[str, Any]
    mcnemar: dict[str, Any] | None
    sequential: Decision

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers become ``None``).

        >>> decision = Decision('need_more_data', 0.0, -1.0, 1.0, 10, 0.5, 0.5, 1.0, 'accuracy', 0.0, 0.05, True)
        >>> report = EvaluationReport('accuracy', 10, 0.5, 0.5, 0.0, 0.0, 0.05, 'need_more_data', -0.1, 0.1, 1.0,
        ...                           {}, None, decision)
        >>> report.to_dict()['sequential']['n']
        10
        """
        out = {key: _finite_or_none(value) for key, value in asdict(self).items() if key != "sequential"}
        return {**out, "sequential": self.sequential.to_dict()}


def labelled_data(data: Any, *, label: str = "label", split: str = "test", seed: int = 0) -> tuple[Any, np.ndarray]:
    """``(inputs, labels)`` of: a registered dataset's name (its ``split``: raw inputs, as a served model takes
    them), a ``DatasetSplits``, an ``(x, y)`` pair, or a csv/parquet/jsonl file with a ``label`` column (the
    other columns are the inputs, as a pandas frame: each model reads its rows as Serve would).

    >>> x, y = labelled_data((np.zeros((3, 2)), [0, 1, 1]))
    >>> x.shape, y.tolist()
    ((3, 2), [0, 1, 1])
    """
    if isinstance(data, tuple) and len(data) == 2:
        inputs, labels = data
        return (inputs if not hasattr(inputs, "detach") else inputs.detach().cpu().numpy()), np.asarray(labels)
    if isinstance(data, str | Path) and Path(data).suffix in TABLE_SUFFIXES:
        from ..data import read_table
        from ..data.datasets import require_columns

        frame = read_table(data)
        require_columns(frame, [label], key="label")
        return frame.drop(columns=[label]), frame[label].to_numpy()
    from ..data import DatasetSplits, load_dataset

    splits = load_dataset(str(data), seed=seed) if isinstance(data, str) else data
    if not isinstance(splits, DatasetSplits):
        raise TypeError(f"cannot evaluate on a {type(data).__name__}: pass a dataset name, file, splits or (x, y)")
    return splits.raw(split).numpy(), np.asarray(splits.targets(split))


def class_indices(labels: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Labels as class indices: numbers as they are, names through the model's ``labels`` list.

    >>> class_indices(np.array(['rotten', 'fresh']), {'labels': ['fresh', 'rotten']}).tolist()
    [1, 0]
    """
    if labels.dtype.kind in "iub" or (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        return labels.astype(np.int64)
    names = [str(name) for name in meta.get("labels") or []]
    unknown = sorted({str(v) for v in labels} - set(names))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the model's classes {names}")
    return np.array([names.index(str(v)) for v in labels], dtype=np.int64)


def evaluate(
    evaluator: ShadowModeEvaluator,
    data: Any,
    *,
    label: str = "label",
    split: str = "test",
    seed: int = 0,
    resamples: int = 1000,
) -> EvaluationReport:
    """Both models on ``data`` (:func:`labelled_data`), compared once: see the module.

    >>> from deepseek_ray.eval import ShadowModeEvaluator
    >>> x = np.arange(400.0).reshape(-1, 1)
    >>> y = (x[:, 0] % 2).astype(int)
    >>> always_zero = lambda batch: np.eye(2)[np.zeros(len(batch), dtype=int)]
    >>> always_right = lambda batch: np.eye(2)[(batch[:, 0] % 2).astype(int)]
    >>> report = evaluate(ShadowModeEvaluator(always_right, always_zero), (x, y), resamples=200)
    >>> report.verdict, report.delta, report.mcnemar['candidate_only']
    ('promote', 0.5, 200)
    """
    if evaluator.live is None or evaluator.candidate is None:
        raise ValueError("evaluate needs both models: pass new_model= and old_model=")
    inputs, labels = labelled_data(data, label=label, split=split, seed=seed)
    if hasattr(inputs, "to_dict"):  # a table: each model reads its own rows
        live_raw = evaluator.live(evaluator.live.from_frame(inputs))
        candidate_raw = evaluator.candidate(evaluator.candidate.from_frame(inputs))
    else:
        live_raw, candidate_raw = evaluator.predict(inputs)
    task = evaluator.task
    labels = labels.reshape(-1)
    y = (
        labels.astype(np.float64)
        if task == REGRESSION
        else class_indices(labels, evaluator.live.meta or evaluator.candidate.meta)
    )
    # The online decision these pairs would give, fed in a seeded random order: files are often sorted (by
    # class, by time), and a confidence sequence assumes pairs that arrive exchangeably.
    order = np.random.default_rng(seed).permutation(len(y))
    online = evaluator.fresh().update(np.asarray(live_raw)[order], np.asarray(candidate_raw)[order], y[order])
    decision = online.decision()
    live, candidate = as_outputs(live_raw, task), as_outputs(candidate_raw, task)
    value_l, value_c = (
        score(evaluator.metric, y, outputs, average=online.average, num_classes=online.num_classes)
        for outputs in (live, candidate)
    )
    delta = (value_c - value_l) if evaluator.spec.higher_is_better else (value_l - value_c)
    draws = paired_bootstrap(online, y, live, candidate, resamples, seed)
    lower, upper = (float(v) for v in np.nanquantile(draws, [evaluator.alpha, 1 - evaluator.alpha]))
    verdict = "promote" if lower > evaluator.threshold else "keep" if upper < evaluator.threshold else "need_more_data"
    return EvaluationReport(
        metric=evaluator.metric,
        n=len(y),
        live_metric=value_l,
        candidate_metric=value_c,
        delta=delta,
        threshold=evaluator.threshold,
        alpha=evaluator.alpha,
        verdict=verdict,
        lower=lower,
        upper=upper,
        agreement=decision.agreement,
        bootstrap={"resamples": resamples, "seed": seed, "level": 1 - 2 * evaluator.alpha, "method": "percentile"},
        mcnemar=mcnemar(y, live.classes, candidate.classes) if task == CLASSIFICATION else None,
        sequential=decision,
    )


def paired_bootstrap(
    online: ShadowModeEvaluator, y: np.ndarray, live: Any, candidate: Any, resamples: int, seed: int
) -> np.ndarray:
    """Δ on ``resamples`` resamples of the pairs (the same rows for both models), seeded.

    Metrics that are functions of feature means are recomputed from the resampled means; roc_auc re-ranks.

    >>> from deepseek_ray.eval import ShadowModeEvaluator, as_outputs
    >>> y = np.array([0, 1] * 50)
    >>> live, candidate = as_outputs(np.zeros(100, int), 'classification'), as_outputs(y, 'classification')
    >>> online = ShadowModeEvaluator().update(live.classes, candidate.classes, y)
    >>> draws = paired_bootstrap(online, y, live, candidate, resamples=100, seed=0)
    >>> draws.shape, bool(0.3 < draws.mean() < 0.7)
    ((100,), True)
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    if online.metric == "roc_auc":
        draws = np.empty(resamples)
        classes = [1] if online.num_classes == 2 else range(online.num_classes or 2)
        for i in range(resamples):
            rows = rng.integers(0, n, n)
            gaps = [_auc_gap(y[rows] == k, candidate.scores[rows, k], live.scores[rows, k]) for k in classes]
            draws[i] = np.mean(gaps)
        return draws
    answers = (lambda o: o.values) if online.task == REGRESSION else (lambda o: o.classes)
    z = online._paired.features(y, answers(live), answers(candidate))
    chunk = max(1, 2**22 // max(n * z.shape[1], 1))
    parts = []
    for start in range(0, resamples, chunk):
        rows = rng.integers(0, n, (min(chunk, resamples - start), n))
        parts.append(online._paired(z[rows].mean(1))[0])
    return np.concatenate(parts)


def _auc_gap(positive: np.ndarray, candidate: np.ndarray, live: np.ndarray) -> float:
    if positive.all() or not positive.any():
        return np.nan  # a resample without one of the classes: AUC undefined (np.nanquantile would skip it)
    return auc_terms(positive, candidate)[0] - auc_terms(positive, live)[0]


def mcnemar(y: np.ndarray, live: Any, candidate: Any) -> dict[str, Any]:
    """McNemar's exact test of equal accuracy: a two-sided binomial test on the discordant pairs.

    >>> mcnemar(np.array([1, 1, 1, 0]), np.array([0, 0, 1, 0]), np.array([1, 1, 1, 0]))['candidate_only']
    2
    """
    from scipy.stats import binomtest

    live_right, candidate_right = live == y, candidate == y
    live_only = int((live_right & ~candidate_right).sum())
    candidate_only = int((candidate_right & ~live_right).sum())
    discordant = live_only + candidate_only
    pvalue = float(binomtest(candidate_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"live_only": live_only, "candidate_only": candidate_only, "pvalue": pvalue, "exact": True}
