"""Prediction over a folder of cases: region per case, the challenge's output files, per-case errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mood_vqad.baselines.detector import VAEDetector
from mood_vqad.config import REGION_DEFAULTS, method_family
from mood_vqad.inference.detector import Detector
from mood_vqad.inference.weights import WeightsError, vae_weights_dir
from mood_vqad.io import (
    CaseError,
    check_output_dir,
    list_cases,
    load_volume,
    write_pixel_map,
    write_sample_score,
)
from mood_vqad.overlap import overlapped

log = logging.getLogger(__name__)

ABDOMEN_MIN_SIDE = 384  # MOOD: brain volumes are 256^3, abdominal ones 512^3


@dataclass(frozen=True)
class PredictOptions:
    """What the `predict` command takes besides its folders; None means the region config's default."""

    region: str = "auto"
    device: str = "auto"
    method: str = "vqvae-restoration"
    restorations: int | None = None
    slice_stride: int | None = None
    masking: str | None = None
    neighbour_rule: bool | None = None
    batch_size: int = 256
    seed: int = 0
    skip_existing: bool = False
    progress: bool = True
    energy_steps: int | None = None  # vae-energy (None: the VAE detector's defaults)
    energy_alpha: float | None = None
    energy_lambda: float | None = None
    members: tuple[str, ...] | None = None  # vae-ensemble's predictors


def resolve_device(name: str) -> torch.device:
    """auto: the GPU when one is visible, else the CPU with a one-line warning."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("no GPU visible: running on the CPU")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CaseError("--device cuda", "no CUDA device is visible")
    return torch.device(name)


def detect_region(shape: tuple[int, ...], requested: str) -> str:
    """The region of a case: as requested, or by size (largest side >= 384 voxels: abdomen)."""
    if requested != "auto":
        return requested
    return "abdom" if max(shape) >= ABDOMEN_MIN_SIDE else "brain"


def output_path(output_dir: Path, case: Path, task: str) -> Path:
    """Where a case's result goes: X.nii.gz.txt for the sample task, X.nii.gz for the pixel task."""
    return Path(output_dir) / (f"{case.name}.txt" if task == "sample" else case.name)


class DetectorCache:
    """Loads each (region, family) weights once; weights that fail keep failing with the same line.

    family "vqvae" reads WEIGHTS/<region>/, family "vae" (the baselines) WEIGHTS/<region>-vae/.
    """

    def __init__(self, weights_dir: Path, device: torch.device):
        self.weights_dir = Path(weights_dir)
        self.device = device
        self.loaded: dict[tuple[str, str], Detector | VAEDetector | WeightsError] = {}

    def get(self, region: str, family: str = "vqvae") -> Detector | VAEDetector:
        """The detector of a region and model family, loading it on first use (raises WeightsError)."""
        key = (region, family)
        if key not in self.loaded:
            vae = family == "vae"
            folder = vae_weights_dir(self.weights_dir, region) if vae else self.weights_dir / region
            try:
                self.loaded[key] = (VAEDetector if vae else Detector).load(folder, self.device)
                log.debug("loaded %s %s weights from %s", region, family, folder)
            except WeightsError as exc:
                self.loaded[key] = exc
        found = self.loaded[key]
        if isinstance(found, WeightsError):
            raise found
        return found


def score_case(
    case: Path,
    loaded: tuple[np.ndarray, np.ndarray],
    task: str,
    output_dir: Path,
    detectors: DetectorCache,
    options: PredictOptions,
) -> Callable[[], None]:
    """Score one loaded case (volume, affine); returns the atomic write of its output (raises CaseError)."""
    volume, affine = loaded
    region = detect_region(volume.shape, options.region)
    family = method_family(options.method)
    try:
        detector = detectors.get(region, family)
    except WeightsError as exc:
        what = f"{region} VAE" if family == "vae" else region
        raise CaseError(case, f"no usable {what} weights: {exc}") from exc
    common = {
        "slice_stride": options.slice_stride,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "progress": options.progress,
        "method": options.method,
    }
    if isinstance(detector, VAEDetector):
        settings = detector.settings(
            energy_steps=options.energy_steps,
            energy_alpha=options.energy_alpha,
            energy_lambda=options.energy_lambda,
            members=options.members,
            **common,
        )
    else:
        settings = detector.settings(
            restorations=options.restorations,
            masking=options.masking,
            neighbour_rule=options.neighbour_rule,
            **common,
        )
    target = output_path(output_dir, case, task)
    if task == "sample":
        score = detector.sample_score(volume, settings)
        return lambda: write_sample_score(target, score)
    scores = detector.pixel_scores(volume, settings)
    return lambda: write_pixel_map(target, scores, affine)


def predict_folder(
    task: str, input_dir: Path | str, output_dir: Path | str, weights_dir: Path | str, options: PredictOptions
) -> int:
    """Predict every case of input_dir into output_dir; returns the number of failed cases (1: none ran)."""
    if task not in ("sample", "pixel"):
        raise ValueError(f"task must be 'sample' or 'pixel', got {task!r}")
    if options.region not in ("auto", *REGION_DEFAULTS):
        raise ValueError(f"unknown region {options.region!r}")
    method_family(options.method)  # raises ValueError for an unknown method
    try:
        check_output_dir(Path(output_dir))
        cases = list_cases(Path(input_dir))
        device = resolve_device(options.device)
    except CaseError as exc:
        log.error("%s", exc)
        return 1
    log.info("%s task: %d files in %s, device %s", task, len(cases), input_dir, device)
    detectors = DetectorCache(Path(weights_dir), device)
    failed = 0
    skip = options.skip_existing
    todo = [c for c in cases if not (skip and output_path(Path(output_dir), c, task).exists())]

    def score(case: Path, loaded: tuple[np.ndarray, np.ndarray]) -> Callable[[], None]:
        return score_case(case, loaded, task, Path(output_dir), detectors, options)

    # the next case is read and the previous one written in background threads; a step is one case's
    bar = tqdm(todo, desc=f"{task} cases", unit="case", disable=not options.progress)
    for case, step in overlapped(bar, load_volume, score):
        try:
            step()
        except CaseError as exc:
            log.error("%s", exc)
            failed += 1
        except (RuntimeError, OSError, MemoryError) as exc:
            log.error("%s: failed (%s: %s)", case.name, type(exc).__name__, str(exc).splitlines()[0][:200])
            failed += 1
    if failed:
        log.error("%d of %d cases failed; the others were written", failed, len(cases))
    else:
        log.info("all %d cases written to %s", len(cases), output_dir)
    return failed
