"""The eval stage: metrics against scikit-learn, the online decision (batching, pickling, verdicts), its error
rate under repeated looks (simulated), and offline comparison of real models (ONNX, bundle, MLflow URI)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from deepseek_ray.eval import Decision, ShadowModeEvaluator, as_outputs, as_predictor, paired_metric, score
from deepseek_ray.eval.sequential import BettingCS, auc_terms, clopper_pearson
from deepseek_ray.eval.simulation import accuracy_law, check_population, f1_law, repeated_looks

ALPHA = 0.05


def noisy(y: np.ndarray, right: float, rng: np.random.Generator, classes: int = 2) -> np.ndarray:
    """Predictions that are right with probability ``right``, else another class at random."""
    wrong = (y + rng.integers(1, classes, len(y))) % classes
    return np.where(rng.random(len(y)) < right, y, wrong)


# ------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize(
    "metric, average, classes",
    [("accuracy", None, 3), ("f1_score", "binary", 2), ("f1_score", "macro", 4), ("precision", "macro", 3),
     ("recall", "binary", 2), ("precision", "binary", 2)],
)  # fmt: skip
def test_paired_metrics_equal_scikit_learn_at_the_mean(metric, average, classes):
    rng = np.random.default_rng(1)
    y = rng.integers(0, classes, 500)
    live, candidate = noisy(y, 0.6, rng, classes), noisy(y, 0.7, rng, classes)
    live[:3] = classes - 1  # a class only one model predicts still counts for both (one class list)
    paired = paired_metric(metric, average, classes)
    value_c, value_l = paired.values(paired.features(y, live, candidate).mean(0))
    for value, predicted in ((value_c, candidate), (value_l, live)):
        expected = score(metric, y, as_outputs(predicted, "classification"), average=average, num_classes=classes)
        assert value == pytest.approx(expected, abs=1e-12)


def test_regression_deltas_are_positive_when_the_candidate_errs_less():
    y = np.linspace(0, 10, 200)
    live, candidate = y + 1.0, y + np.where(np.arange(200) % 2, 0.5, -0.5)
    for metric, gap in (("mae", 0.5), ("rmse", 0.5)):
        decision = ShadowModeEvaluator(metric=metric).update(live, candidate, y).decision()
        assert decision.delta == pytest.approx(gap)
        assert decision.live_metric == pytest.approx(score(metric, y, as_outputs(live, "regression")))
    agreement = ShadowModeEvaluator(metric="mae", tolerance=0.1).update([10, 10], [10.5, 12], [0, 0]).decision()
    assert agreement.agreement == 0.5  # within 10% of the live value counts as agreeing


def test_auc_terms_match_scikit_learn_and_delong():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) + 0.4 * y, 1)  # rounded: ties count a half
    auc, terms = auc_terms(y == 1, scores)
    assert auc == pytest.approx(roc_auc_score(y, scores))
    pos, neg = scores[y == 1], scores[y == 0]
    v10 = [(np.sum(p > neg) + 0.5 * np.sum(p == neg)) / len(neg) for p in pos]
    v01 = [(np.sum(pos > q) + 0.5 * np.sum(pos == q)) / len(pos) for q in neg]
    delong = np.var(v10) / len(pos) + np.var(v01) / len(neg)  # DeLong's variance (1/m normalisation)
    assert np.mean(terms**2) / len(y) == pytest.approx(delong, rel=1e-9)


# -------------------------------------------------------------------------------------------- online
def test_batches_and_pickling_do_not_change_the_decision():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 3000)
    live, candidate = noisy(y, 0.75, rng, 3), noisy(y, 0.79, rng, 3)
    for metric in ("accuracy", "f1_score"):
        whole = ShadowModeEvaluator(metric=metric, num_classes=3).update(live, candidate, y).decision()
        pieces = ShadowModeEvaluator(metric=metric, num_classes=3)
        cuts = np.sort(rng.choice(np.arange(1, 3000), 40, replace=False))
        for i, (start, stop) in enumerate(zip([0, *cuts], [*cuts, 3000], strict=True)):
            pieces.update(live[start:stop].tolist(), candidate[start:stop], y[start:stop])
            if i == 20:
                pieces = pickle.loads(pickle.dumps(pieces))  # the Serve side may keep its state on disk
        assert pieces.decision().to_dict() == pytest.approx(whole.to_dict())
        assert whole.n == 3000 and whole.exact == (metric == "accuracy")


@pytest.mark.parametrize("metric", ["accuracy", "f1_score", "precision", "recall", "roc_auc", "mae", "rmse"])
def test_promote_keep_and_need_more_data(metric):
    rng = np.random.default_rng(4)
    n = 4000
    y = rng.integers(0, 2, n)
    regression = metric in ("mae", "rmse")

    def model(quality: float) -> np.ndarray:
        if regression:
            return y + rng.normal(0, 1.5 - quality, n)
        if metric == "roc_auc":
            return 1 / (1 + np.exp(-(quality * (2 * y - 1) + rng.normal(0, 1, n))))  # positive-class scores
        return noisy(y, quality, rng)

    labels = y.astype(float) if regression else y
    mid, better, worse = model(0.8), model(0.9), model(0.7)
    verdicts = [
        ShadowModeEvaluator(metric=metric).update(mid, candidate, labels).decision() for candidate in (better, worse)
    ]
    assert [d.verdict for d in verdicts] == ["promote", "keep"]
    assert verdicts[0].lower > 0 and verdicts[1].upper < 0 and verdicts[0].lower < verdicts[0].delta < verdicts[0].upper
    few = ShadowModeEvaluator(metric=metric).update(mid[:30], better[:30], labels[:30]).decision()
    assert few.verdict == "need_more_data" and few.n == 30
    assert ShadowModeEvaluator(metric=metric).decision().verdict == "need_more_data"


def test_threshold_is_a_margin_the_candidate_must_beat():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 5000)
    live, candidate = noisy(y, 0.80, rng), noisy(y, 0.85, rng)  # Δ ≈ 0.05
    verdict = {t: ShadowModeEvaluator(threshold=t).update(live, candidate, y).decision().verdict for t in (0.0, 0.2)}
    assert verdict == {0.0: "promote", 0.2: "keep"}


def test_inputs_are_read_as_classes_probabilities_logits_or_scores():
    rows = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert as_outputs(rows, "classification").classes.tolist() == [1, 0]
    logits = as_outputs(np.array([[2.0, -1.0], [0.0, 3.0]]), "classification")
    assert logits.classes.tolist() == [0, 1] and np.allclose(logits.scores.sum(1), 1)
    assert as_outputs(np.array([0.3, 0.7]), "classification").classes.tolist() == [0, 1]
    ev = ShadowModeEvaluator(metric="f1_score")
    ev.update([0, 1], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="num_classes"):
        ev.update([2], [0], [0])
    with pytest.raises(ValueError, match="needs scores"):
        ShadowModeEvaluator(metric="roc_auc").update([0, 1], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="for regression, not classification"):
        ShadowModeEvaluator(metric="mae", task="classification")
    assert isinstance(ShadowModeEvaluator().decision(), Decision)


# ------------------------------------------------------------------------- error rate, repeated looks
def test_the_evaluator_decides_as_the_vectorised_sequence_does():
    law = accuracy_law(0.06, 0.2)
    rng = np.random.default_rng(6)
    y, live, candidate = law.draw(rng, 6, 3000)
    cs = BettingCS(threshold=0.02, runs=6, grid=np.array([0.02]))
    cs.update((candidate == y).astype(float) - (live == y))
    for run in range(6):
        ev = ShadowModeEvaluator(threshold=0.02)
        for start in range(0, 3000, 50):
            ev.update(live[run, start : start + 50], candidate[run, start : start + 50], y[run, start : start + 50])
        assert ev.decision().decided_at == cs.decided_at()[run]
        assert ev.decision().verdict == cs.verdicts()[run]


def test_laws_hit_their_population_metrics():
    for law, metric in ((accuracy_law(0.02, 0.3), "accuracy"), (f1_law(0.02, 0.1), "f1_score")):
        candidate, live = law.population(metric)
        assert candidate - live == pytest.approx(0.02, abs=1e-12)
        sampled = check_population(law, metric, n=400_000)
        assert sampled == pytest.approx((candidate, live), abs=4e-3)


@pytest.mark.parametrize("metric, law", [("accuracy", accuracy_law(0.02, 0.2)), ("f1_score", f1_law(0.02, 0.2))])
def test_false_promotions_stay_near_alpha_under_repeated_looks_while_a_fixed_test_does_not(metric, law):
    # At the null boundary (true Δ = threshold), looking every 20 labels up to 2,000: 100 looks.
    runs = 400
    result = repeated_looks(law, metric, 0.02, runs=runs, every=20, until=2000, seed=7, horizon=1000)
    promoted, naive = int((result.promoted_at > 0).sum()), int((result.naive_promoted_at > 0).sum())
    assert clopper_pearson(promoted, runs)[0] <= ALPHA, f"{promoted}/{runs} promoted: above alpha"
    assert clopper_pearson(naive, runs)[0] > ALPHA, f"the fixed-sample test promoted only {naive}/{runs}"
    assert promoted / runs <= 2 * ALPHA


# ------------------------------------------------------------------------------------------- offline
class NearestCentroid(nn.Module):
    """Digits by the nearest class centroid of raw pixels: a decent classifier without training."""

    def __init__(self, centroids: np.ndarray):
        super().__init__()
        self.register_buffer("centroids", torch.as_tensor(centroids, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distance = ((x.flatten(1)[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return torch.softmax(-distance / 50.0, -1)


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory, image_bundle):
    """An exported nearest-centroid model (candidate) and an untrained cell-net bundle (live)."""
    from deepseek_ray.data import load_dataset
    from deepseek_ray.export import ModelExporter

    splits = load_dataset("digits", seed=0)
    x, y = splits.raw("train").numpy().reshape(-1, 64), splits.targets("train")
    model = NearestCentroid(np.stack([x[y == k].mean(0) for k in range(10)]))
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    ModelExporter().export(model, path, torch.zeros(2, 1, 8, 8), metadata={"labels": [str(k) for k in range(10)]})
    return {"onnx": path, "bundle": image_bundle, "module": model, "splits": splits}


def test_evaluate_on_a_registered_dataset_promotes_the_better_model(digits_models):
    ev = ShadowModeEvaluator(new_model=digits_models["onnx"], old_model=digits_models["bundle"], metric="f1_score")
    report = ev.evaluate("digits", resamples=300)
    assert report.n == 179 and report.candidate_metric > 0.85 and report.live_metric < 0.3
    assert report.verdict == "promote" and report.lower > 0 and report.sequential.verdict == "promote"
    assert report.mcnemar["candidate_only"] > report.mcnemar["live_only"] and report.mcnemar["pvalue"] < 1e-6
    assert report.to_dict()["sequential"]["exact"] is False  # macro F1: asymptotic
    same = ShadowModeEvaluator(new_model=digits_models["module"], old_model=digits_models["onnx"])
    tie = same.evaluate(digits_models["splits"], resamples=300)  # the module and its export: identical answers
    assert tie.delta == 0 and tie.agreement == 1 and tie.verdict == "need_more_data"
    assert tie.mcnemar["pvalue"] == 1.0


def test_evaluate_on_a_labelled_file_and_an_array_pair(digits_models, tmp_path):
    import pandas as pd

    splits = digits_models["splits"]
    x, y = splits.raw("test").numpy().reshape(-1, 64), splits.targets("test")
    frame = pd.DataFrame(x, columns=[f"p{i}" for i in range(64)]).assign(digit=[str(v) for v in y])
    frame.to_csv(tmp_path / "held_out.csv", index=False)
    ev = ShadowModeEvaluator(new_model=digits_models["onnx"], old_model=digits_models["bundle"])
    from_file = ev.evaluate(tmp_path / "held_out.csv", label="digit", resamples=200)
    from_arrays = ev.evaluate((x.reshape(-1, 1, 8, 8), y), resamples=200)
    assert from_file.to_dict() == from_arrays.to_dict()
    assert from_file.verdict == "promote" and from_file.sequential.exact is True


def test_models_from_an_mlflow_registry(digits_models, tmp_path):
    import mlflow
    import onnx
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("shadow", artifact_location=(tmp_path / "artifacts").as_uri())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            mlflow.onnx.log_model(onnx.load(digits_models["onnx"]), name="model", registered_model_name="digits")
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias("digits", "champion", "1")
    x = digits_models["splits"].raw("test").numpy()
    expected = as_predictor(digits_models["onnx"])(x)
    for name in ("models:/digits/1", "models:/digits@champion"):
        assert np.allclose(as_predictor(name, tracking_uri=uri)(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"cannot load models:/absent/1 from the MLflow store at sqlite:"):
        as_predictor("models:/absent/1", tracking_uri=uri)


def test_evaluate_on_raw_table_rows_through_each_models_request_parser(tmp_path):
    import palmerpenguins
    from sklearn.linear_model import LogisticRegression

    from deepseek_ray.data import kind_metadata, load_dataset
    from deepseek_ray.export import ModelExporter

    splits = load_dataset("penguins", seed=0)
    x, y = splits.raw("train").numpy(), splits.train.y.numpy()  # encoded features, as the exported graph takes
    meta = {"labels": splits.labels, **kind_metadata(splits.kind), "input_spec": splits.kind.input_spec(splits)}
    for name, strength in (("good", 1.0), ("weak", 1e-4)):
        fitted = LogisticRegression(C=strength, max_iter=2000).fit(x, y)
        model = nn.Sequential(nn.Linear(x.shape[1], 3), nn.Softmax(-1))
        model[0].weight.data = torch.tensor(fitted.coef_, dtype=torch.float32)
        model[0].bias.data = torch.tensor(fitted.intercept_, dtype=torch.float32)
        ModelExporter().export(model, tmp_path / name / "model.onnx", torch.zeros(2, x.shape[1]), metadata=meta)
    palmerpenguins.load_penguins().to_csv(tmp_path / "rows.csv", index=False)  # raw rows, sorted by species
    ev = ShadowModeEvaluator(new_model=tmp_path / "good", old_model=tmp_path / "weak")
    report = ev.evaluate(tmp_path / "rows.csv", label="species", resamples=200)
    assert report.n == 344 and report.candidate_metric > 0.95 > report.live_metric  # rows with gaps imputed
    assert report.verdict == report.sequential.verdict == "promote"
    assert report.sequential.lower < report.sequential.delta < report.sequential.upper  # fed shuffled
