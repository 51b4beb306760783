"""Metrics: a hand-computed classification report, parity with scikit-learn and scipy, perplexity."""

import math

import numpy as np
import pytest

from minilm.metrics import classification_report, confusion_matrix, pearson, perplexity, spearman


def test_classification_report_by_hand():
    # gold a a a b b c, predicted a a b b c c; class "d" never occurs
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c", "d"])
    # confusion: a -> (2, 1, 0), b -> (0, 1, 1), c -> (0, 0, 1)
    assert report["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert report["n"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    # precision a 2/2, b 1/2, c 1/2; recall a 2/3, b 1/2, c 1/1; F1 a 0.8, b 0.5, c 2/3
    assert report["per_class_f1"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert "d" not in report["per_class_f1"]  # absent from gold and predictions: left out of the macro means
    assert report["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert report["macro_f1"] == pytest.approx(59 / 90)
    for name in ("micro_precision", "micro_recall", "micro_f1"):
        assert report[name] == pytest.approx(4 / 6)


def test_classification_report_class_only_predicted_and_perfect():
    # "c" is predicted once but never gold: P = R = F1 = 0 and it counts in the macro mean
    report = classification_report([0, 1, 1], [0, 1, 2], ["a", "b", "c"])
    assert report["per_class_f1"] == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 0.0})
    assert report["macro_precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert report["macro_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3) / 3)
    perfect = classification_report([1, 0, 1], [1, 0, 1], ["x", "y"])
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["micro_f1"] == 1.0


def test_classification_report_of_nothing():
    empty = classification_report([], [], ["x", "y"])
    assert empty["n"] == 0 and empty["accuracy"] == empty["macro_f1"] == 0.0 and empty["per_class_f1"] == {}


def test_confusion_matrix_rows_are_gold():
    assert confusion_matrix([0, 1, 1, 2], [1, 1, 0, 2], 3).tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("seed, n_labels", [(0, 2), (1, 3), (2, 7)])
def test_classification_report_matches_sklearn(seed, n_labels):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, n_labels, size=200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, n_labels, size=200))
    if n_labels == 7:
        gold[gold == 6], pred[pred == 6] = 5, 5  # one class absent everywhere
        pred[pred == 4] = 3  # and one never predicted
    labels = [f"class{i}" for i in range(n_labels)]
    report = classification_report(gold.tolist(), pred.tolist(), labels)
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(gold, pred))
    p, r, f, _ = metrics.precision_recall_fscore_support(gold, pred, average="macro", zero_division=0)
    assert (report["macro_precision"], report["macro_recall"], report["macro_f1"]) == pytest.approx((p, r, f))
    p, r, f, _ = metrics.precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)
    assert (report["micro_precision"], report["micro_recall"], report["micro_f1"]) == pytest.approx((p, r, f))
    present = sorted(set(gold.tolist()) | set(pred.tolist()))
    f1 = metrics.f1_score(gold, pred, labels=present, average=None, zero_division=0)
    assert report["per_class_f1"] == pytest.approx({labels[c]: v for c, v in zip(present, f1)})
    assert report["confusion_matrix"] == metrics.confusion_matrix(gold, pred, labels=range(n_labels)).tolist()


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # constant input: defined as 0, not nan
    assert spearman([1, 10, 100, 1000], [1, 2, 3, 4]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))  # ties share ranks


@pytest.mark.parametrize("seed", range(3))
def test_correlations_match_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    xt, yt = rng.integers(0, 5, size=60), rng.integers(0, 4, size=60) + rng.integers(0, 5, size=60)  # many ties
    assert spearman(xt, yt) == pytest.approx(stats.spearmanr(xt, yt)[0], abs=1e-12)
    assert spearman(xt.tolist(), yt.tolist()) == pytest.approx(stats.spearmanr(xt, yt)[0], abs=1e-12)
    assert pearson(xt, yt) == pytest.approx(stats.pearsonr(xt, yt)[0], abs=1e-12)


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(53)) == pytest.approx(53.0)
    assert perplexity(2.5) == pytest.approx(math.exp(2.5))
    assert perplexity(1e9) == pytest.approx(math.exp(50.0)) and math.isfinite(perplexity(float("inf")))
