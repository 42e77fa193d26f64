"""Pixel AP ceilings of a toy set, and pixel AP per normal source of the cases.

A learned map is bounded by what a perfect one would score through the same pipeline. For each case of a
toy set (rebuilt from `data toy`'s own random stream, so the normal volume before its anomalies is known)
this scores, with the challenge's AP over all voxels of all cases:

- `label`: the pixel label itself, through the detector's slicing and post-filter (a perfect detector of
  the scored slices: what the slice stride, the slice size and the filters leave of the anomalies);
- `oracle residual`: |case - normal|, the residual of a perfect reconstruction of the normal volume, at full
  resolution (no pipeline) and through the pipeline;
- each `--predictions NAME=DIR` (maps written by `predict pixel` on the set's cases).

Columns: all cases, then the cases built from each normal source (with the set's normal cases of that
source), which tells a source the model trained on from one it did not.

With `--codes WEIGHTS` (a VQ-VAE region folder) a second table is the ceiling of the prior: each
anomalous case and its normal volume are encoded at the same scored slices (`--code-stride`), and it
counts the codes that cover a labelled voxel, the share of them the anomaly changes at all (a code it
leaves as it was is invisible to any prior), the codes it changes elsewhere, and the mean NLL of the
covered codes in the case and in the normal volume.

    PYTHONPATH=. python scripts/ceiling.py --set SET/brain --normals TRAIN_DIR --region brain --split train \
        [--seed 0] [--strides 16 1] [--predictions static=PRED_DIR ...] [--codes weights/brain]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mood_vqad.config import PredictOptions  # noqa: E402
from mood_vqad.data.toy import case_base, normal_volumes, toy_stream  # noqa: E402
from mood_vqad.evaluation.evaluate import label_mask  # noqa: E402
from mood_vqad.evaluation.metrics import (  # noqa: E402
    FLOAT16_KEY_VALUES,
    average_precision,
    count_keys,
    float16_keys,
    ranking,
)
from mood_vqad.inference.detector import VQVAEDetector  # noqa: E402
from mood_vqad.inference.floor import region_config  # noqa: E402
from mood_vqad.inference.scores import squash  # noqa: E402
from mood_vqad.inference.slicing import extract_slices, maps_to_volume, slice_indices  # noqa: E402
from mood_vqad.io import list_cases, load_volume  # noqa: E402

SCALE = 0.1  # squash scale: monotone, so it only keeps small differences apart in float16


def through_pipeline(values: np.ndarray, case: np.ndarray, region, stride: int) -> np.ndarray:
    """values (the case's shape) sliced, resized, interpolated, post-filtered and resized back, as a map."""
    indices = slice_indices(case, region, stride)
    maps = extract_slices(values.astype(np.float32), region, indices)[:, 0]  # (S, size, size)
    return maps_to_volume(maps, indices, case, region)


def case_maps(args: argparse.Namespace, region, normals: list[Path], name: str, case: np.ndarray, label):
    """Every map of one case by row name, its normal source and its normal volume."""
    i = int(name.removeprefix("toy_").split(".")[0])
    stream = toy_stream(args.seed, args.region, args.split)
    base, _, _ = case_base(normals[i % len(normals)], stream, i, args.region)
    residual = np.abs(case - base)
    maps = {"oracle residual, full resolution": residual}
    for stride in args.strides:
        maps[f"label, stride {stride}"] = through_pipeline(label, case, region, stride)
        maps[f"oracle residual, stride {stride}"] = through_pipeline(residual, case, region, stride)
    for prediction in args.predictions:
        row, folder = prediction.split("=", 1)
        maps[row] = load_volume(Path(folder) / name)[0]
    return maps, normals[i % len(normals)].name.split(".")[0], base


CODE_ROWS = (
    "codes covering the anomaly",
    "share of them the anomaly changes",
    "codes it changes elsewhere",
    "mean NLL of covered codes, case",
    "mean NLL of covered codes, normal volume",
)


def code_counts(
    detector: VQVAEDetector, case: np.ndarray, base: np.ndarray, label: np.ndarray, stride: int
) -> np.ndarray:
    """Covered codes, covered codes changed, other codes changed, NLL sums of the covered codes in the case
    and in the normal volume: the slices both score, the normal volume encoded at the case's slices."""
    settings = detector.settings_from(PredictOptions(slice_stride=stride))
    encoded = [detector.encode(volume, settings) for volume in (case, base)]
    common = np.intersect1d(*(e.indices for e in encoded))  # an anomaly can add or take foreground slices
    kept = [np.isin(e.indices, common) for e in encoded]
    codes = [e.codes[k] for e, k in zip(encoded, kept, strict=True)]  # (S, h, w) each
    nll = [detector.code_nll(e, settings)[k] for e, k in zip(encoded, kept, strict=True)]
    covered = detector.covered_codes(label, common)
    changed = codes[0] != codes[1]
    return np.array(
        [
            covered.sum(),
            (changed & covered).sum(),
            (changed & ~covered).sum(),
            nll[0][covered].sum(),
            nll[1][covered].sum(),
        ],
        dtype=np.float64,
    )


def print_code_table(totals: dict[str, np.ndarray], args: argparse.Namespace) -> None:
    """The prior's ceiling per column: counts and shares from the summed code_counts."""
    print(f"\nthe prior's ceiling, {args.codes}, every {args.code_stride}th slice; columns: anomalous cases")
    columns = sorted(totals, key=lambda c: (c != "all", c))
    print("| codes | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    shown = {}
    for column in columns:
        covered, changed, elsewhere, nll_case, nll_normal = totals[column]
        per_code = [f"{x / covered:.2f}" if covered else "-" for x in (changed, nll_case, nll_normal)]
        shown[column] = [f"{covered:.0f}", per_code[0], f"{elsewhere:.0f}", *per_code[1:]]
    for k, row in enumerate(CODE_ROWS):
        cells = [values[k] for values in shown.values()]
        print(f"| {row} | " + " | ".join(cells) + " |")


def main() -> None:
    """Score every map of every case; print a Markdown table of pixel AP."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", type=Path, required=True, help="a region folder: toy/ and toy_label/pixel/")
    parser.add_argument("--normals", type=Path, required=True, help="the set's normal folder")
    parser.add_argument("--region", choices=["brain", "abdom"], required=True)
    parser.add_argument("--split", choices=["holdout", "train"], default="holdout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strides", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--weights", type=Path, default=REPO / "weights", help="region settings from here")
    parser.add_argument("--predictions", nargs="*", default=[], help="NAME=DIR of predicted maps")
    parser.add_argument("--codes", type=Path, help="a VQ-VAE region folder: the prior's ceiling table")
    parser.add_argument("--code-stride", type=int, default=16, help="slice stride of the code table")
    args = parser.parse_args()

    region = region_config(args.weights / args.region, args.region)
    normals = normal_volumes(args.normals)
    counts: dict[tuple[str, str], np.ndarray] = defaultdict(int)  # (row, column) -> (2, keys)
    detector = VQVAEDetector.load(args.codes, torch.device("cpu")) if args.codes else None
    code_totals: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(CODE_ROWS)))
    for path in list_cases(args.set / "toy"):
        case, _ = load_volume(path)
        label = label_mask(load_volume(args.set / "toy_label" / "pixel" / path.name)[0])
        maps, source, base = case_maps(args, region, normals, path.name, case, label)
        if detector is not None and label.any():
            code_found = code_counts(detector, case, base, label, args.code_stride)
            code_totals["all"] += code_found
            code_totals[source] += code_found
        for row, values in maps.items():
            found = count_keys(float16_keys(squash(values, SCALE)), label)
            counts[row, "all"] = counts[row, "all"] + found
            counts[row, source] = counts[row, source] + found
        print(f"{path.name} ({source}) scored", file=sys.stderr, flush=True)

    rows = list(dict.fromkeys(r for r, _ in counts))
    columns = list(dict.fromkeys(c for _, c in counts))
    print(f"pixel AP, {args.set} ({args.split} split, seed {args.seed}); columns: cases by normal source")
    print("| map | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for column in columns:
            positives, negatives = counts[row, column]
            ap = average_precision(ranking(FLOAT16_KEY_VALUES, positives, negatives))
            cells.append("-" if ap is None else f"{ap:.4f}")
        print(f"| {row} | " + " | ".join(cells) + " |")
    if detector is not None:
        print_code_table(code_totals, args)


if __name__ == "__main__":
    main()
