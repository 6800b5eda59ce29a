"""Classification metrics on integer class ids: accuracy, binary F1 and Matthews correlation.

Plain numpy so that evaluation needs neither sklearn nor `evaluate`; the values match
sklearn's `accuracy_score`, `f1_score(pos_label=...)` and `matthews_corrcoef`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from compresskit.errors import ConfigError


def _as_pair(predictions: ArrayLike, references: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = np.asarray(predictions).ravel(), np.asarray(references).ravel()
    if preds.shape != refs.shape:
        raise ValueError(f"{preds.size} predictions but {refs.size} references")
    if preds.size == 0:
        raise ValueError("no predictions to score")
    return preds, refs


def accuracy(predictions: ArrayLike, references: ArrayLike) -> float:
    """Fraction of predictions equal to their reference."""
    preds, refs = _as_pair(predictions, references)
    return float(np.mean(preds == refs))


def f1(predictions: ArrayLike, references: ArrayLike, positive: int = 1) -> float:
    """Binary F1 of class id `positive`; 0.0 when there are no true or predicted positives."""
    preds, refs = _as_pair(predictions, references)
    true_pos = int(np.sum((preds == positive) & (refs == positive)))
    false_pos = int(np.sum((preds == positive) & (refs != positive)))
    false_neg = int(np.sum((preds != positive) & (refs == positive)))
    if true_pos == 0:
        return 0.0
    return 2 * true_pos / (2 * true_pos + false_pos + false_neg)


def matthews_corrcoef(predictions: ArrayLike, references: ArrayLike) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0.0 when it is undefined."""
    preds, refs = _as_pair(predictions, references)
    confusion = _confusion(preds, refs)
    # Floats: with int64, s**2 * s**2 overflows from about 55k examples on.
    true_per_class = confusion.sum(axis=1).astype(np.float64)  # t_k
    pred_per_class = confusion.sum(axis=0).astype(np.float64)  # p_k
    correct, total = float(np.trace(confusion)), float(confusion.sum())
    numerator = correct * total - float(pred_per_class @ true_per_class)
    denominator = np.sqrt(total**2 - float(pred_per_class @ pred_per_class)) * np.sqrt(
        total**2 - float(true_per_class @ true_per_class)
    )
    return 0.0 if denominator == 0 else float(numerator / denominator)


def _confusion(preds: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(K, K) counts, rows = reference class, columns = predicted class, over classes seen."""
    classes, codes = np.unique(np.concatenate([refs, preds]), return_inverse=True)
    k = len(classes)
    ref_codes, pred_codes = codes[: refs.size], codes[refs.size :]
    return np.bincount(ref_codes * k + pred_codes, minlength=k * k).reshape(k, k)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
}


def compute_metrics(
    names: Sequence[str], predictions: ArrayLike, references: ArrayLike
) -> dict[str, float]:
    """Score predictions with each named metric, in the order given."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ConfigError(
            f"unknown metric {unknown[0]!r}: choose from {', '.join(sorted(METRICS))}"
        )
    preds, refs = np.asarray(predictions), np.asarray(references)
    return {name: METRICS[name](preds, refs) for name in names}
