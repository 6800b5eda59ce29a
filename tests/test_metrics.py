"""Metrics against values worked out by hand (the arithmetic is in each test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compresskit.errors import ConfigError
from compresskit.train.metrics import (
    METRICS,
    accuracy,
    compute_metrics,
    f1,
    matthews_corrcoef,
)

# One binary case used by several tests:
#   refs  1 0 0 1 1
#   preds 1 1 0 1 0   -> TP = 2 (items 0, 3), FP = 1 (item 1), TN = 1 (item 2), FN = 1 (item 4)
PREDS = [1, 1, 0, 1, 0]
REFS = [1, 0, 0, 1, 1]


def test_accuracy_is_the_fraction_correct():
    assert accuracy(PREDS, REFS) == pytest.approx(3 / 5)  # items 0, 2, 3


def test_f1_of_the_positive_class():
    # 2 TP / (2 TP + FP + FN) = 4 / (4 + 1 + 1)
    assert f1(PREDS, REFS) == pytest.approx(4 / 6)


def test_f1_of_another_positive_class():
    # Class 0 as positive: TP = 1 (item 2), FP = 1 (item 4), FN = 1 (item 1) -> 2 / (2 + 1 + 1)
    assert f1(PREDS, REFS, positive=0) == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    ("preds", "refs"),
    [([0, 0, 0], [0, 0, 0]), ([0, 0], [1, 1]), ([1, 1], [0, 0])],
    ids=["no positives at all", "none predicted", "none true"],
)
def test_f1_without_true_positives_is_zero(preds, refs):
    assert f1(preds, refs) == 0.0


def test_mcc_of_a_binary_confusion():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert matthews_corrcoef(PREDS, REFS) == pytest.approx(1 / 6)


def test_mcc_of_a_perfect_prediction_is_one():
    assert matthews_corrcoef([0, 1, 2, 1], [0, 1, 2, 1]) == pytest.approx(1.0)


def test_mcc_of_an_inverted_binary_prediction_is_minus_one():
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("preds", "refs"),
    [([1, 1, 1, 1], [0, 1, 0, 1]), ([0, 1, 0, 1], [1, 1, 1, 1]), ([0, 0], [0, 0])],
    ids=["one predicted class", "one reference class", "one class everywhere"],
)
def test_mcc_is_zero_when_undefined(preds, refs):
    assert matthews_corrcoef(preds, refs) == 0.0


def test_multiclass_mcc_from_the_confusion_matrix():
    refs = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    # Confusion (rows = reference, columns = prediction):
    #   [[2, 1, 0],
    #    [0, 1, 1],
    #    [0, 0, 1]]
    # correct c = 4, total s = 6, true per class t = (3, 2, 1), predicted per class p = (2, 2, 2)
    # MCC = (c*s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t))
    #     = (24 - (6 + 4 + 2)) / sqrt((36 - 12)(36 - 14)) = 12 / sqrt(528)
    assert matthews_corrcoef(preds, refs) == pytest.approx(12 / math.sqrt(528))


def test_mcc_does_not_overflow_on_large_inputs():
    refs = np.arange(200_000) % 2
    assert matthews_corrcoef(refs, refs) == pytest.approx(1.0)


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40))
def test_binary_mcc_matches_the_two_by_two_formula(pairs):
    preds = np.array([p for p, _ in pairs])
    refs = np.array([r for _, r in pairs])
    tp = int(np.sum((preds == 1) & (refs == 1)))
    tn = int(np.sum((preds == 0) & (refs == 0)))
    fp = int(np.sum((preds == 1) & (refs == 0)))
    fn = int(np.sum((preds == 0) & (refs == 1)))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    expected = 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator
    assert matthews_corrcoef(preds, refs) == pytest.approx(expected)


def test_metrics_registry_names():
    assert set(METRICS) == {"accuracy", "f1", "mcc"}


def test_compute_metrics_keeps_the_order_given():
    scores = compute_metrics(["mcc", "accuracy", "f1"], np.array(PREDS), np.array(REFS))
    assert list(scores) == ["mcc", "accuracy", "f1"]
    assert scores == pytest.approx({"mcc": 1 / 6, "accuracy": 3 / 5, "f1": 4 / 6})
    assert all(type(value) is float for value in scores.values())


def test_compute_metrics_rejects_an_unknown_name_in_one_line():
    with pytest.raises(ConfigError, match="unknown metric 'auc'") as info:
        compute_metrics(["accuracy", "auc"], PREDS, REFS)
    assert "\n" not in str(info.value)
    assert "accuracy, f1, mcc" in str(info.value)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_metrics_reject_mismatched_lengths(metric):
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        METRICS[metric](np.array([0, 1, 1]), np.array([0, 1]))
