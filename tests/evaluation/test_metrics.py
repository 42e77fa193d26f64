"""Counts-based AP, AUROC and best Dice against sklearn and brute force, on inputs full of ties."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_vqad.evaluation.metrics import (
    FLOAT16_KEY_VALUES,
    average_precision,
    best_dice,
    count_keys,
    count_values,
    float16_keys,
    ranking,
    roc_auc,
    summarize,
)


def challenge_read(scores: np.ndarray) -> np.ndarray:
    """Scores as the challenge's scorer reads a prediction: float16, clipped to [0, 1]."""
    with np.errstate(over="ignore"):
        return np.clip(np.asarray(scores).astype(np.float16), 0.0, 1.0)


def float16_ranking(scores: np.ndarray, labels: np.ndarray):
    return ranking(FLOAT16_KEY_VALUES, *count_keys(float16_keys(scores), labels))


def tied_scores(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Scores with many ties, out-of-range values and values that only tie once cast to float16."""
    if kind == "levels":
        return rng.choice(rng.uniform(-0.2, 1.2, size=rng.integers(1, 12)), size=n).astype(np.float32)
    if kind == "float16_ties":
        # Offsets far below float16's step near these levels: distinct as float32, equal as float16.
        levels = rng.choice([0.1, 0.25, 0.5, 0.7, 0.999], size=n)
        return (levels + rng.uniform(-1e-5, 1e-5, size=n)).astype(np.float32)
    scores = rng.uniform(-0.1, 1.1, size=n)
    scores[rng.random(n) < 0.2] = -0.0
    scores[rng.random(n) < 0.05] = np.inf
    scores[rng.random(n) < 0.05] = 1e-9  # below float16's smallest subnormal: becomes 0
    return scores


@pytest.mark.parametrize("kind", ["levels", "float16_ties", "wide"])
@pytest.mark.parametrize("seed", range(8))
def test_ap_and_auroc_equal_sklearn(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    scores = tied_scores(rng, n, kind)
    labels = rng.random(n) < rng.uniform(0.01, 0.6)
    labels[:2] = [True, False]
    r = float16_ranking(scores, labels)
    read = challenge_read(scores)
    assert average_precision(r) == pytest.approx(average_precision_score(labels, read), abs=1e-9)
    assert roc_auc(r) == pytest.approx(roc_auc_score(labels, read), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_count_values_equal_sklearn_on_float64(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(200), 2)
    labels = rng.random(200) < 0.3
    labels[:2] = [True, False]
    r = ranking(*count_values(scores, labels))
    assert average_precision(r) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert roc_auc(r) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_float16_keys_follow_value_order_and_clip() -> None:
    special = [-np.inf, -1.0, -0.0, 0.0, 1e-9, 6e-8, 1e-5, 0.5, 0.50001, 1.0, 1.0001, 7e4, np.inf]
    rng = np.random.default_rng(0)
    scores = np.concatenate([special, rng.uniform(-0.5, 1.5, size=5000)])
    keys = float16_keys(scores)
    np.testing.assert_array_equal(FLOAT16_KEY_VALUES[keys], challenge_read(scores).astype(np.float64))
    # Equal keys <=> equal values, including -0.0 and +0.0.
    assert keys[2] == keys[3] == 0


def test_float16_keys_reject_nan() -> None:
    with pytest.raises(ValueError, match="1 scores are NaN"):
        float16_keys(np.array([0.1, np.nan, 0.3], dtype=np.float32))


@pytest.mark.parametrize("seed", range(6))
def test_best_dice_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.choice(rng.random(15), size=400).astype(np.float32)
    labels = rng.random(400) < 0.2
    labels[0] = True
    read = challenge_read(scores)
    brute = max(
        2 * np.sum((read >= t) & labels) / (np.sum(read >= t) + np.sum(labels)) for t in np.unique(read)
    )
    dice, threshold = best_dice(float16_ranking(scores, labels))
    assert dice == pytest.approx(brute, abs=1e-12)
    predicted = read >= threshold
    assert 2 * np.sum(predicted & labels) / (predicted.sum() + labels.sum()) == pytest.approx(dice, abs=1e-12)


def test_one_class_is_undefined_not_zero() -> None:
    scores = np.array([0.2, 0.4, 0.4], dtype=np.float32)
    no_positive = summarize(float16_ranking(scores, np.zeros(3, dtype=bool)))
    assert no_positive["ap"] is None and no_positive["auroc"] is None and no_positive["best_dice"] is None
    all_positive = summarize(float16_ranking(scores, np.ones(3, dtype=bool)))
    assert all_positive["ap"] == pytest.approx(1.0) and all_positive["auroc"] is None
    assert all_positive["positives"] == 3 and all_positive["negatives"] == 0
