"""Score a folder of predictions against a folder of labels exactly as the MOOD challenge does.

Mirrors `eval_dir` of MIC-DKFZ/mood scripts/evalresults.py: files are matched by the label file names;
the sample task ranks cases, the pixel task ranks all voxels of all cases together. A missing, unreadable
or mis-shaped prediction scores as all zeros; a label that cannot be read drops its case. Pixel cases are
streamed in slabs along the last axis and reduced to counts per float16 value (see `metrics`), so memory
does not grow with the volume size or the number of cases.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mood_vqad.errors import CaseError
from mood_vqad.evaluation.metrics import (
    FLOAT16_KEY_VALUES,
    N_FLOAT16_KEYS,
    Ranking,
    average_precision,
    count_keys,
    count_values,
    float16_keys,
    ranking,
    summarize,
)
from mood_vqad.io import list_cases

log = logging.getLogger(__name__)

TASKS = ("sample", "pixel")
TYPES_FILE_NAME = "anomaly_types.json"
SLAB_VOXELS = 1 << 22  # ~4M voxels per slab: 16 slices of a 512^3 volume, a few tens of MB in flight
OK, MISSING, SHAPE, UNREADABLE = "ok", "missing", "shape", "unreadable"


class _LabelUnreadable(Exception):
    """A label the challenge's scorer could not read either: it drops the case."""


@dataclass
class CaseResult:
    """How one case was scored."""

    name: str  # the label file name
    status: str  # OK, or why the prediction scored as zeros: MISSING, SHAPE, UNREADABLE
    positives: int  # anomalous voxels (pixel) or 1 / 0 (sample)
    items: int  # voxels (pixel) or 1 (sample)
    score: float | None = None  # sample task: the prediction as scored
    ap: float | None = None  # pixel task: AP of this case alone
    label_area: np.ndarray | None = field(default=None, repr=False)  # pixel: positives per last-axis slice


@dataclass
class Evaluation:
    """The scored cases, the ranking of all of them, and one ranking per anomaly type."""

    task: str
    pred_dir: Path
    label_dir: Path
    cases: list[CaseResult]
    skipped: list[str]  # label files that could not be read
    overall: Ranking
    per_type: dict[str, tuple[int, Ranking]]  # type -> (cases having it, ranking over them plus normals)
    types_file: Path | None = None


def read_types(path: Path) -> dict[str, list[str]]:
    """Read {case file name: [anomaly type, ...]} ([] for a normal case) from a JSON file."""
    path = Path(path)
    try:
        types = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CaseError(path, f"cannot read anomaly types ({exc})") from exc
    if not isinstance(types, dict) or not all(
        isinstance(v, list) and all(isinstance(t, str) for t in v) for v in types.values()
    ):
        raise CaseError(path, "anomaly types must map case file names to lists of type names")
    return types


def default_types_file(label_dir: Path) -> Path | None:
    """LABEL_DIR/../anomaly_types.json if it exists (where the data builder writes it)."""
    path = Path(label_dir).resolve().parent / TYPES_FILE_NAME
    return path if path.is_file() else None


def _case_types(name: str, types: dict[str, list[str]]) -> list[str] | None:
    """A case's anomaly types by its image name (sample labels are named X.nii.gz.txt); None if unrecorded."""
    return types.get(name.removesuffix(".txt"), types.get(name))


def _open_prediction(path: Path, shape: tuple[int, ...]) -> tuple[Any, str]:
    """The prediction image, or None with the reason it scores as zeros."""
    if not path.exists():
        return None, MISSING
    try:
        image = nib.load(path, keep_file_open=True)  # one handle: slabs of a .nii.gz then read in one pass
    except Exception:  # nibabel raises many types for corrupt or non-NIfTI files
        return None, UNREADABLE
    # The challenge compares the array shapes exactly: (X, Y, Z, 1) does not match (X, Y, Z).
    return (image, OK) if image.shape == shape else (None, SHAPE)


def label_mask(values: np.ndarray) -> np.ndarray:
    """Anomalous voxels of label values as the challenge reads them: rint(value), clipped to [0, 1], is 1."""
    return np.rint(np.asarray(values, dtype=np.float64)) >= 1


def _label_slab(label: Any, slab: slice) -> np.ndarray:
    """The label mask of a slab; _LabelUnreadable if it cannot be read."""
    try:
        return label_mask(label.dataobj[..., slab])
    except Exception as exc:
        raise _LabelUnreadable(str(exc)) from exc


def _prediction_slab(pred: Any, slab: slice) -> np.ndarray | None:
    """A slab of the prediction as stored (scaled by nibabel), or None if it cannot be read."""
    try:
        return np.asarray(pred.dataobj[..., slab])
    except Exception:
        return None


def _pixel_case(pred_path: Path, label_path: Path) -> tuple[CaseResult, np.ndarray]:
    """Score one pixel case: its result and its positives and negatives per float16 key, shape (2, K)."""
    try:
        label = nib.load(label_path, keep_file_open=True)
    except Exception as exc:
        raise _LabelUnreadable(str(exc)) from exc
    shape = label.shape
    if not shape:
        raise _LabelUnreadable("label has no voxels")
    pred, status = _open_prediction(pred_path, shape)
    depth = shape[-1]
    step = max(1, SLAB_VOXELS // max(1, int(np.prod(shape[:-1]))))
    counts = np.zeros((2, N_FLOAT16_KEYS), dtype=np.int64)
    label_area = np.zeros(depth, dtype=np.int64)
    for start in range(0, depth, step):
        slab = slice(start, min(start + step, depth))
        mask = _label_slab(label, slab)
        label_area[slab] = mask.reshape(-1, mask.shape[-1]).sum(axis=0)
        if pred is None:
            continue
        values = _prediction_slab(pred, slab)
        if values is None:
            pred, status = None, UNREADABLE
            continue
        try:
            keys = float16_keys(values)
        except ValueError as exc:
            raise CaseError(pred_path, f"{exc}; the challenge's scorer fails on NaN") from exc
        counts += count_keys(keys, mask)
    items = int(np.prod(shape))
    n_pos = int(label_area.sum())
    if pred is None:
        # The whole case scores zero, slabs counted before a read failed included.
        counts[:] = 0
        counts[:, 0] = n_pos, items - n_pos
    case = CaseResult(
        name=label_path.name,
        status=status,
        positives=n_pos,
        items=items,
        ap=average_precision(ranking(FLOAT16_KEY_VALUES, *counts)),
        label_area=label_area,
    )
    return case, counts


def _first_line(path: Path) -> str:
    """The first line of a text file, as the challenge's scorer reads it."""
    with open(path) as handle:
        return handle.readline()


def _sample_label(path: Path) -> int:
    """The label of a sample case: 0 or 1, written as an int or a float."""
    try:
        label = round(float(_first_line(path)))
    except (OSError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise _LabelUnreadable(str(exc)) from exc
    if label not in (0, 1):
        raise _LabelUnreadable(f"label {label} is not 0 or 1")
    return label


def _sample_case(pred_path: Path, label_path: Path) -> CaseResult:
    """Score one sample case: the first line of the prediction as a float clipped to [0, 1], else 0."""
    label = _sample_label(label_path)
    status, score = OK, 0.0
    if not pred_path.exists():
        status = MISSING
    else:
        try:
            score = float(_first_line(pred_path))
        except (OSError, UnicodeDecodeError, ValueError):
            status = UNREADABLE
    if np.isnan(score):
        raise CaseError(pred_path, "the score is NaN; the challenge's scorer fails on NaN")
    return CaseResult(
        name=label_path.name, status=status, positives=label, items=1, score=min(max(score, 0.0), 1.0)
    )


def _sample_ranking(cases: list[CaseResult]) -> Ranking:
    """The ranking of sample cases by their scores."""
    scores = np.array([c.score for c in cases], dtype=np.float64)
    labels = np.array([c.positives for c in cases], dtype=bool)
    return ranking(*count_values(scores, labels))


def evaluate_folder(
    task: str,
    pred_dir: Path,
    label_dir: Path,
    types_file: Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Score every label file of label_dir against the file of the same name in pred_dir.

    Args:
        task: "sample" (label X.nii.gz.txt vs prediction X.nii.gz.txt) or "pixel" (X.nii.gz vs X.nii.gz).
        pred_dir: folder of predictions; missing files score as zeros.
        label_dir: folder of labels; every file in it is a case.
        types_file: JSON {case file name: [types]} for the per-type rankings; None for none.
        progress: show a progress bar over cases.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    types = read_types(types_file) if types_file is not None else {}
    cases: list[CaseResult] = []
    skipped: list[str] = []
    # Cases per anomaly type (key None: cases recorded as normal); for the pixel task also their summed
    # counts, since keeping per-case counts (2 x 15361 integers) would grow with the number of cases.
    members: dict[str | None, list[CaseResult]] = {}
    sums: dict[str | None, np.ndarray] = {}
    total = np.zeros((2, N_FLOAT16_KEYS), dtype=np.int64)
    unrecorded = 0
    for label_path in tqdm(list_cases(label_dir), desc=f"evaluate {task}", unit="case", disable=not progress):
        try:
            case, counts = _score_case(task, pred_dir / label_path.name, label_path)
        except _LabelUnreadable as exc:
            log.warning("%s: label unreadable, case dropped as the challenge does (%s)", label_path.name, exc)
            skipped.append(label_path.name)
            continue
        if case.status != OK:
            log.info("%s: prediction %s, scored as zeros", case.name, case.status)
        cases.append(case)
        recorded = _case_types(case.name, types)
        unrecorded += recorded is None
        groups = [] if recorded is None else sorted(set(recorded)) or [None]
        for group in groups:
            members.setdefault(group, []).append(case)
        if counts is not None:
            total += counts
            for group in groups:
                sums[group] = sums.get(group, 0) + counts
    if types and unrecorded:
        log.warning("%d of %d cases have no recorded anomaly types", unrecorded, len(cases))
    return Evaluation(
        task=task,
        pred_dir=pred_dir,
        label_dir=label_dir,
        cases=cases,
        skipped=skipped,
        overall=ranking(FLOAT16_KEY_VALUES, *total) if task == "pixel" else _sample_ranking(cases),
        per_type=_per_type(task, members, sums),
        types_file=None if types_file is None else Path(types_file),
    )


def _score_case(task: str, pred_path: Path, label_path: Path) -> tuple[CaseResult, np.ndarray | None]:
    """A case's result, and for the pixel task its counts (raises _LabelUnreadable)."""
    if task == "pixel":
        return _pixel_case(pred_path, label_path)
    return _sample_case(pred_path, label_path), None


def _per_type(
    task: str, members: dict[str | None, list[CaseResult]], sums: dict[str | None, np.ndarray]
) -> dict[str, tuple[int, Ranking]]:
    """Each anomaly type's case count and ranking: its cases together with the normal ones (key None)."""
    normal = members.get(None, [])
    per_type: dict[str, tuple[int, Ranking]] = {}
    for name, having in sorted((k, v) for k, v in members.items() if k is not None):
        if task == "pixel":
            type_ranking = ranking(FLOAT16_KEY_VALUES, *(sums.get(None, 0) + sums[name]))
        else:
            type_ranking = _sample_ranking(normal + having)
        per_type[name] = (len(having), type_ranking)
    return per_type


def _status_count(evaluation: Evaluation, status: str) -> int:
    """Number of cases whose prediction had the given status."""
    return sum(case.status == status for case in evaluation.cases)


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    """Every number of an evaluation as a JSON-ready dict."""
    per_case = []
    for case in evaluation.cases:
        row: dict[str, Any] = {"name": case.name, "status": case.status, "positives": case.positives}
        if evaluation.task == "pixel":
            row.update(voxels=case.items, ap=case.ap)
        else:
            row.update(score=case.score)
        per_case.append(row)
    return {
        "task": evaluation.task,
        "pred_dir": str(evaluation.pred_dir),
        "label_dir": str(evaluation.label_dir),
        "types_file": None if evaluation.types_file is None else str(evaluation.types_file),
        "cases": len(evaluation.cases),
        "missing_predictions": _status_count(evaluation, MISSING),
        "misshaped_predictions": _status_count(evaluation, SHAPE),
        "unreadable_predictions": _status_count(evaluation, UNREADABLE),
        "skipped_labels": evaluation.skipped,
        "metrics": summarize(evaluation.overall),
        "per_type": {
            name: {"cases": n_cases, **summarize(r)} for name, (n_cases, r) in evaluation.per_type.items()
        },
        "per_case": per_case,
    }


def _number(value: float | None) -> str:
    """A metric for the table; n/a where it is undefined (one class only)."""
    return "n/a" if value is None else f"{value:.6f}"


def format_table(evaluation: Evaluation) -> str:
    """The main numbers as a two-column text table."""
    metrics = summarize(evaluation.overall)
    unit = "voxels" if evaluation.task == "pixel" else "cases"
    rows = [
        ("metric", "value"),
        ("ap", _number(metrics["ap"])),
        ("auroc", _number(metrics["auroc"])),
        ("best_dice", _number(metrics["best_dice"])),
        ("best_dice_threshold", _number(metrics["best_dice_threshold"])),
        ("cases", str(len(evaluation.cases))),
        (f"positive {unit}", str(metrics["positives"])),
        (f"negative {unit}", str(metrics["negatives"])),
        ("missing predictions", str(_status_count(evaluation, MISSING))),
        ("misshaped predictions", str(_status_count(evaluation, SHAPE))),
        ("unreadable predictions", str(_status_count(evaluation, UNREADABLE))),
        ("skipped labels", str(len(evaluation.skipped))),
    ]
    for name, (n_cases, r) in evaluation.per_type.items():
        rows.append((f"ap {name} ({n_cases} cases + normals)", _number(average_precision(r))))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
