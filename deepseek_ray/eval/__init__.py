"""Compare a candidate model with the live one and decide whether to promote it: metrics (scikit-learn),
paired tests, confidence sequences that stay valid under repeated looks, offline and online comparison.

>>> from deepseek_ray.eval import ShadowModeEvaluator
>>> ev = ShadowModeEvaluator(metric='f1_score', threshold=0.02)
>>> ev.update([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1]).decision().verdict
'need_more_data'

Importing this package loads numpy only; scikit-learn, SciPy, torch, ONNX Runtime and MLflow are imported
when a call needs them (Serve replicas import it).
"""

from .evaluator import VERDICTS, Decision, ShadowModeEvaluator
from .metrics import METRICS, MetricSpec, PairedMetric, as_outputs, get_metric, paired_metric, score
from .offline import EvaluationReport, labelled_data, mcnemar
from .predictors import Predictor, as_predictor
from .sequential import (
    AsymptoticCS,
    AucCS,
    BettingCS,
    clopper_pearson,
    confidence_sequence,
    fixed_sample_bounds,
    mixture_boundary,
)

__all__ = [
    "METRICS",
    "VERDICTS",
    "AsymptoticCS",
    "AucCS",
    "BettingCS",
    "Decision",
    "EvaluationReport",
    "MetricSpec",
    "PairedMetric",
    "Predictor",
    "ShadowModeEvaluator",
    "as_outputs",
    "as_predictor",
    "clopper_pearson",
    "confidence_sequence",
    "fixed_sample_bounds",
    "get_metric",
    "labelled_data",
    "mcnemar",
    "mixture_boundary",
    "paired_metric",
    "score",
]
