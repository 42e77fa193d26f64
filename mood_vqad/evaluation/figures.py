"""Figures of an evaluation: the precision-recall curves and, for the pixel task, slices of every case.

Matplotlib is used through `Figure` objects and the Agg canvas (no pyplot state, no display). Its config and
font cache go to a temporary folder inside the output folder unless MPLCONFIGDIR is set, so nothing is
written to $HOME.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mood_vqad.evaluation.evaluate import OK, CaseResult, Evaluation, label_mask
from mood_vqad.evaluation.metrics import FLOAT16_KEY_VALUES, average_precision, float16_keys, precision_recall

log = logging.getLogger(__name__)

CONTOUR_COLOUR = "cyan"


@contextmanager
def _matplotlib_config(out_dir: Path) -> Iterator[None]:
    """Point MPLCONFIGDIR at a temporary folder inside out_dir unless the user set it."""
    if os.environ.get("MPLCONFIGDIR"):
        yield
        return
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".mplconfig-") as tmp:
        os.environ["MPLCONFIGDIR"] = tmp
        try:
            yield
        finally:
            del os.environ["MPLCONFIGDIR"]


def choose_slices(label_area: np.ndarray) -> list[int]:
    """Up to three slices: the label's largest and halfway to each end of its extent; quartiles if normal."""
    hit = np.flatnonzero(label_area)
    if hit.size == 0:
        depth = label_area.size
        return sorted({depth // 4, depth // 2, (3 * depth) // 4})
    peak = int(np.argmax(label_area))
    return sorted({(int(hit[0]) + peak) // 2, peak, (peak + int(hit[-1]) + 1) // 2})


def _read_slices(path: Path, slices: list[int], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Slices (increasing) along the last axis of a volume, as stored: shape (len(slices), ...).

    Raises ValueError if shape is given and the volume's differs.
    """
    image = nib.load(path, keep_file_open=True)  # one handle: a .nii.gz is read once, forwards
    if shape is not None and image.shape != shape:
        raise ValueError(f"shape {image.shape}, label {shape}")
    return np.stack([np.asarray(image.dataobj[..., z]) for z in slices])


def plot_precision_recall(evaluation: Evaluation, path: Path) -> Path:
    """Write the precision-recall curve of all cases, and of each anomaly type, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    curves = [("all", evaluation.overall)] + [(name, r) for name, (_, r) in evaluation.per_type.items()]
    for name, r in curves:
        ap = average_precision(r)
        if ap is None:
            continue
        precision, recall = precision_recall(r)
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            lw=2 if name == "all" else 1,
            label=f"{name}: AP {ap:.4f}",
        )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"{evaluation.task} task, {len(evaluation.cases)} cases")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper right")
    fig.savefig(path, dpi=100)
    return path


def plot_case(evaluation: Evaluation, case: CaseResult, path: Path, image_dir: Path | None = None) -> Path:
    """Write a pixel case's PNG: per slice the image (else the label) and the scores, label outlined."""
    from matplotlib.figure import Figure

    slices = choose_slices(case.label_area)
    labels = label_mask(_read_slices(evaluation.label_dir / case.name, slices))
    if case.status == OK:
        scores = FLOAT16_KEY_VALUES[float16_keys(_read_slices(evaluation.pred_dir / case.name, slices))]
    else:
        scores = np.zeros(labels.shape)  # scored as zeros, so shown as zeros
    images = None
    if image_dir is not None and (Path(image_dir) / case.name).is_file():
        shape = (*labels.shape[1:], case.label_area.size)  # (n, X, Y) slices of (X, Y, Z)
        try:
            images = _read_slices(Path(image_dir) / case.name, slices, shape).astype(np.float32)
        except Exception as exc:  # a figure without its image beats no figure
            log.warning("%s: image not shown (%s)", case.name, exc)
    fig = Figure(figsize=(8, 3.6 * len(slices)), layout="constrained")
    axes = fig.subplots(len(slices), 2, squeeze=False)
    for row, z in enumerate(slices):
        mask = labels[row]
        left, right = axes[row]
        if images is None:
            left.imshow(mask.T, origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            left.set_title(f"label, slice {z}")
        else:
            left.imshow(images[row].T, origin="lower", cmap="gray", interpolation="nearest")
            left.set_title(f"image, slice {z}")
        shown = right.imshow(
            scores[row].T, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest"
        )
        right.set_title(f"score ({case.status}), slice {z}")
        fig.colorbar(shown, ax=right, shrink=0.8)
        for ax in (left, right):
            if mask.any():  # contour() warns on a constant array
                ax.contour(mask.T.astype(np.float32), levels=[0.5], colors=CONTOUR_COLOUR, linewidths=0.8)
            ax.set_axis_off()
    ap = "n/a" if case.ap is None else f"{case.ap:.4f}"
    fig.suptitle(f"{case.name}: {case.positives} anomalous voxels, case AP {ap}")
    fig.savefig(path, dpi=80)
    return path


def write_figures(
    evaluation: Evaluation, out_dir: Path, image_dir: Path | None = None, progress: bool = True
) -> list[Path]:
    """Write precision_recall.png and, for the pixel task, cases/<case>.png; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _matplotlib_config(out_dir):
        paths = [plot_precision_recall(evaluation, out_dir / "precision_recall.png")]
        if evaluation.task == "pixel":
            case_dir = out_dir / "cases"
            case_dir.mkdir(exist_ok=True)
            for case in tqdm(evaluation.cases, desc="figures", unit="case", disable=not progress):
                stem = case.name.removesuffix(".gz").removesuffix(".nii")
                paths.append(plot_case(evaluation, case, case_dir / f"{stem}.png", image_dir))
    return paths
