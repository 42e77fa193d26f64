"""Exact ranking metrics (AP, AUROC, best Dice) from counts of positives and negatives per distinct score.

The MOOD scorer (MIC-DKFZ/mood, scripts/evalresults.py) calls sklearn's `average_precision_score` on all
voxels of all cases at once. Its pixel predictions are float16 clipped to [0, 1], so at most 15361 distinct
values occur: counting positives and negatives per value gives the identical precision-recall curve in
memory that does not grow with the number of voxels. The curve follows sklearn's `precision_recall_curve`
(one point per distinct score, highest first) so the AP agrees with sklearn to the last few bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT16_ONE = 0x3C00  # bit pattern of float16 1.0
N_FLOAT16_KEYS = FLOAT16_ONE + 1  # keys 0 .. 0x3C00: every float16 value in [0, 1]
_FLOAT16_SIGN = 0x8000
_FLOAT16_INF = 0x7C00

# The float16 value of every key, in key order (which is also value order).
FLOAT16_KEY_VALUES = np.arange(N_FLOAT16_KEYS, dtype=np.uint16).view(np.float16).astype(np.float64)


def float16_keys(scores: np.ndarray) -> np.ndarray:
    """Integer keys 0 .. 0x3C00 of scores as the challenge reads them: cast to float16, clipped to [0, 1].

    Raises ValueError on NaN, on which the challenge's scorer fails.
    """
    with np.errstate(over="ignore"):  # beyond float16's range becomes inf, then 1, as in the challenge
        bits = np.asarray(scores, dtype=np.float16).view(np.uint16)
    nan = int(np.count_nonzero((bits & 0x7FFF) > _FLOAT16_INF))
    if nan:
        raise ValueError(f"{nan} scores are NaN")
    # Non-negative float16 bit patterns order like their values, so clipping works on the bits: every
    # negative value (-0.0 and -inf included) becomes key 0, shared with +0.0; above 1 (+inf too) becomes 1.
    return np.where(bits >= _FLOAT16_SIGN, 0, np.minimum(bits, FLOAT16_ONE))


def count_keys(keys: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Positives and negatives per float16 key: shape (2, N_FLOAT16_KEYS), int64."""
    total = np.bincount(keys.ravel(), minlength=N_FLOAT16_KEYS)
    positives = np.bincount(keys[labels], minlength=N_FLOAT16_KEYS)
    return np.stack([positives, total - positives]).astype(np.int64, copy=False)


def count_values(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (ascending) with their positive and negative counts, for scores of any dtype."""
    values, index = np.unique(np.ravel(scores), return_inverse=True)
    labels = np.ravel(labels).astype(bool)
    positives = np.bincount(index[labels], minlength=values.size)
    negatives = np.bincount(index[~labels], minlength=values.size)
    return values, positives, negatives


@dataclass(frozen=True)
class Ranking:
    """Cumulative true and false positives at each distinct score, highest score first.

    Point k predicts positive every item scoring >= thresholds[k], as sklearn's `_binary_clf_curve`.
    """

    thresholds: np.ndarray  # (K,) float64, strictly decreasing
    tps: np.ndarray  # (K,) int64, non-decreasing; tps[-1] = all positives
    fps: np.ndarray  # (K,) int64, non-decreasing; fps[-1] = all negatives

    @property
    def positives(self) -> int:
        """Number of positive items."""
        return int(self.tps[-1]) if self.tps.size else 0

    @property
    def negatives(self) -> int:
        """Number of negative items."""
        return int(self.fps[-1]) if self.fps.size else 0


def ranking(values: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> Ranking:
    """The ranking of distinct score values (any order) with their positive and negative counts."""
    positives = np.asarray(positives, dtype=np.int64)
    negatives = np.asarray(negatives, dtype=np.int64)
    present = (positives + negatives) > 0
    values = np.asarray(values, dtype=np.float64)[present]
    order = np.argsort(values)[::-1]
    return Ranking(
        thresholds=values[order],
        tps=np.cumsum(positives[present][order]),
        fps=np.cumsum(negatives[present][order]),
    )


def precision_recall(r: Ranking) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall as sklearn's `precision_recall_curve`: recall decreasing, ending at (1, 0)."""
    precision = r.tps / (r.tps + r.fps)  # every point holds at least one item, so no 0 / 0
    recall = r.tps / r.tps[-1]
    return np.concatenate([precision[::-1], [1.0]]), np.concatenate([recall[::-1], [0.0]])


def average_precision(r: Ranking) -> float | None:
    """sklearn's `average_precision_score`: sum over thresholds of (R_n - R_(n-1)) P_n; None if no positive.

    Without positives, sklearn 1.9 returns 0.0 with a warning and the challenge's pinned sklearn 0.22 gives
    NaN (recall 0 / 0); neither is a score, so it is reported as undefined.
    """
    if r.positives == 0:
        return None
    precision, recall = precision_recall(r)
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def roc_auc(r: Ranking) -> float | None:
    """sklearn's `roc_auc_score` (trapezoids through every threshold); None unless both classes occur."""
    if r.positives == 0 or r.negatives == 0:
        return None
    tpr = np.concatenate([[0.0], r.tps / r.positives])
    fpr = np.concatenate([[0.0], r.fps / r.negatives])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # np.trapezoid needs NumPy >= 2


def best_dice(r: Ranking) -> tuple[float, float] | tuple[None, None]:
    """The best Dice 2TP / (2TP + FP + FN) over thresholds, with its threshold; None, None if no positive."""
    if r.positives == 0:
        return None, None
    dice = 2 * r.tps / (r.tps + r.fps + r.positives)  # 2TP + FP + FN = TP + (TP + FP) + P
    best = int(np.argmax(dice))
    return float(dice[best]), float(r.thresholds[best])


def summarize(r: Ranking) -> dict[str, float | int | None]:
    """All metrics of a ranking as a JSON-ready dict."""
    dice, threshold = best_dice(r)
    return {
        "ap": average_precision(r),
        "auroc": roc_auc(r),
        "best_dice": dice,
        "best_dice_threshold": threshold,
        "positives": r.positives,
        "negatives": r.negatives,
    }
