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
from mood_vqad.config import REGION_DEFAULTS, PredictOptions, method_family
from mood_vqad.errors import CaseError, WeightsError
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.floor import IntensityFloor
from mood_vqad.inference.protocol import Detector
from mood_vqad.io import (
    check_output_dir,
    list_cases,
    load_volume,
    remove_stale_temporaries,
    write_pixel_map,
    write_sample_score,
)
from mood_vqad.overlap import overlapped
from mood_vqad.stopping import Stopped, stop_on_signals

log = logging.getLogger(__name__)

ABDOMEN_MIN_SIDE = 384  # MOOD: brain volumes are 256^3, abdominal ones 512^3


@dataclass(frozen=True)
class Family:
    """A model family's detector, its weights sub-folder ("{region}" filled in) and its name in errors."""

    detector: type[Detector]
    folder: str
    label: str


# The families by config.FAMILY_METHODS key: adding a family is one entry here and one there.
FAMILIES: dict[str, Family] = {
    "vqvae": Family(VQVAEDetector, "{region}", "{region}"),
    "vae": Family(VAEDetector, "{region}-vae", "{region} VAE"),
    # the floor reads only WEIGHTS/<region>/config.json's region settings, when there is one
    "floor": Family(IntensityFloor, "{region}", "{region}"),
}


def family_dir(weights_dir: Path, region: str, family: str) -> Path:
    """Where a region's weights of a family live: WEIGHTS/<region> (VQ-VAE), WEIGHTS/<region>-vae (VAE)."""
    return Path(weights_dir) / FAMILIES[family].folder.format(region=region)


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
    """Loads each (region, family) weights once; weights that fail keep failing with the same line."""

    def __init__(self, weights_dir: Path, device: torch.device):
        self.weights_dir = Path(weights_dir)
        self.device = device
        self.loaded: dict[tuple[str, str], Detector | WeightsError] = {}

    def get(self, region: str, family: str = "vqvae") -> Detector:
        """The detector of a region and model family, loading it on first use (raises WeightsError)."""
        key = (region, family)
        if key not in self.loaded:
            folder = family_dir(self.weights_dir, region, family)
            try:
                self.loaded[key] = FAMILIES[family].detector.load(folder, self.device)
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
        what = FAMILIES[family].label.format(region=region)
        raise CaseError(case, f"no usable {what} weights: {exc}") from exc
    settings = detector.settings_from(options)
    target = output_path(output_dir, case, task)
    if task == "sample":
        score = detector.sample_score(volume, settings)
        return lambda: write_sample_score(target, score)
    scores = detector.pixel_scores(volume, settings)
    return lambda: write_pixel_map(target, scores, affine)


def run_step(case: Path, step: Callable[[], None]) -> bool:
    """One step of a case (scoring it, or its background write); any failure is one `X.nii.gz: cause` line.

    Returns False when the step failed (-v logs the traceback). Stopped (a stop signal) passes through: the
    run ends, not just this case.
    """
    try:
        step()
        return True
    except CaseError as exc:
        log.error("%s", exc)
        log.debug("traceback of %s", case.name, exc_info=True)
    except Exception as exc:  # one broken case must never cost the others, whatever it raises
        cause = (str(exc).splitlines() or [""])[0][:200]
        log.error("%s: failed (%s: %s)", case.name, type(exc).__name__, cause)
        log.debug("traceback of %s", case.name, exc_info=True)
    return False


def summary(total: int, written: int, skipped: int, failed: int) -> str:
    """What a run did, in words: 'all 3 cases failed', '1 of 3 cases failed; the other 2 were written'."""
    kept = f" ({skipped} already there, kept)" if skipped else ""
    if not failed:
        return f"all {total} cases written{kept}"
    if not written and not skipped:
        return f"all {total} cases failed; nothing was written"
    return f"{failed} of {total} cases failed; {written} written{kept}"


def predict_folder(
    task: str, input_dir: Path | str, output_dir: Path | str, weights_dir: Path | str, options: PredictOptions
) -> int:
    """Predict every case of input_dir into output_dir; returns the number of failed cases (1: none ran).

    SIGTERM or SIGINT abandon the case in progress (its temporary file removed) and exit with 128 + signal.
    """
    if task not in ("sample", "pixel"):
        raise ValueError(f"task must be 'sample' or 'pixel', got {task!r}")
    if options.region not in ("auto", *REGION_DEFAULTS):
        raise ValueError(f"unknown region {options.region!r}")
    method_family(options.method)  # raises ValueError for an unknown method
    output_dir = Path(output_dir)
    try:
        check_output_dir(output_dir)
        cases = list_cases(Path(input_dir))
        device = resolve_device(options.device)
    except CaseError as exc:
        log.error("%s", exc)
        return 1
    for name in remove_stale_temporaries(output_dir):
        log.warning("removed %s, left in %s by an earlier run that was killed", name, output_dir)
    log.info("%s task: %d files in %s, device %s", task, len(cases), input_dir, device)
    detectors = DetectorCache(Path(weights_dir), device)
    todo = [c for c in cases if not (options.skip_existing and output_path(output_dir, c, task).exists())]
    skipped = len(cases) - len(todo)
    written: list[Path] = []  # appended by the writer thread as each output lands
    failed: set[Path] = set()

    def score(case: Path, loaded: tuple[np.ndarray, np.ndarray]) -> Callable[[], None]:
        write = score_case(case, loaded, task, output_dir, detectors, options)

        def write_and_count() -> None:
            write()
            written.append(case)

        return write_and_count

    case = None
    with stop_on_signals():
        try:
            # the next case is read and the previous one written in background threads; a step is one case's
            bar = tqdm(todo, desc=f"{task} cases", unit="case", disable=not options.progress)
            for case, step in overlapped(bar, load_volume, score):
                if not run_step(case, step):
                    failed.add(case)
        except Stopped as exc:
            where = f"{case.name} abandoned" if case else "before the first case"
            log.error("stopped by %s: %s; %d of %d cases written", exc, where, len(written), len(cases))
            raise SystemExit(exc.exit_code) from None
    (log.error if failed else log.info)(
        "%s", f"{summary(len(cases), len(written), skipped, len(failed))} ({output_dir})"
    )
    return len(failed)
