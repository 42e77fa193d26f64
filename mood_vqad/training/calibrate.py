"""Calibration on held-out normal volumes: the two NLL thresholds and the two score scales.

The thresholds are percentiles of the per-code NLL of the held-out volumes' scored slices: the authors'
7 and 5 nats were about the 98th and 90th percentiles on their normal data. `sample_scale` is the median
raw sample score of those volumes, so that a typical normal volume scores 0.5 after `squash` and anomalies
climb towards 1. `pixel_scale` is a high percentile of the filtered restoration residual on their
foreground, so that almost every normal voxel scores below 0.5. Scores come from the Detector itself.
A VAE baseline (run or WEIGHTS/<region>-vae) gets the same treatment per map (`baselines.calibrate_vae`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mood_vqad.baselines.detector import VAEDetector, calibrate_vae, save_calibrated
from mood_vqad.config import is_vae_config, save_config
from mood_vqad.inference.detector import Detector, Settings
from mood_vqad.inference.scores import sample_score
from mood_vqad.inference.slicing import foreground_mask
from mood_vqad.inference.weights import CONFIG_FILE, load_vae_weights, load_weights, update_config
from mood_vqad.io import CaseError, list_cases, load_volume
from mood_vqad.predict import resolve_device
from mood_vqad.training.restore_rule import restore_threshold
from mood_vqad.training.runs import (
    CALIBRATION_FILE,
    RUN_FILE,
    load_run_models,
    load_vae_run,
    read_json,
    run_kind,
    write_json,
)

log = logging.getLogger(__name__)

VOXELS_PER_VOLUME = 200_000  # foreground voxels sampled per volume for the pixel percentile
CALIBRATED = ("sample_threshold", "restore_threshold", "sample_scale", "pixel_scale")


def read_volumes(cases: list[Path], desc: str, progress: bool) -> Iterator[tuple[Path, np.ndarray]]:
    """Each readable case with its volume, one at a time; bad files are logged and skipped."""
    for case in tqdm(cases, desc=desc, unit="case", disable=not progress):
        try:
            yield case, load_volume(case)[0]
        except CaseError as exc:
            log.error("%s (skipped)", exc)


def positive(value: float, fallback: float, what: str) -> float:
    """value if above zero, else fallback with a warning (a scale of 0 would send every score to 1)."""
    if value > 0:
        return value
    log.warning("%s is %g on the held-out volumes: using %g", what, value, fallback)
    return fallback


def calibrate(
    source: Path,
    holdout_dir: Path,
    sample_percentile: float,
    restore_percentile: float,
    pixel_percentile: float,
    device: str = "auto",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    restore_rule: str = "percentile",
) -> dict[str, Any]:
    """Calibrate a weights folder or a prior run folder in place; returns what calibration.json holds.

    restore_rule: how the restoration threshold follows from the NLL (`training.restore_rule`).

    Raises CaseError if the held-out folder gives no scored slice, WeightsError for unusable weights.
    """
    source = Path(source)
    is_run = (source / RUN_FILE).is_file()
    config, vqvae, prior = load_run_models(source) if is_run else load_weights(source)
    target = resolve_device(device)
    detector = Detector(config, vqvae, prior, target)
    settings = detector.settings(batch_size=batch_size, seed=seed)
    nll = {
        case: detector.code_nll(detector.encode(volume, settings), settings).cpu()
        for case, volume in read_volumes(list_cases(Path(holdout_dir)), "nll", progress)
    }
    pooled = torch.cat([n.flatten() for n in nll.values()]).numpy() if nll else np.zeros(0)
    if pooled.size == 0:
        raise CaseError(holdout_dir, "no held-out volume gave a scored slice")
    sample_threshold = float(np.percentile(pooled, sample_percentile))
    threshold = restore_threshold(pooled, restore_percentile, restore_rule, config.prior.num_codes)
    raw_scores = {
        case.name: sample_score(n, sample_threshold, settings.slice_stride) for case, n in nll.items()
    }
    scores = np.array(list(raw_scores.values()))
    sample_scale = positive(float(np.median(scores)), float(scores.mean()) or 1.0, "median raw sample score")

    region = dataclasses.replace(
        config.region,
        sample_threshold=sample_threshold,
        restore_threshold=threshold,
        sample_scale=sample_scale,
    )
    # The residuals depend on the new restore threshold: score with the updated config.
    detector = Detector(dataclasses.replace(config, region=region), vqvae, prior, target)
    residuals = foreground_residuals(
        detector, detector.settings(batch_size=batch_size, seed=seed), list(nll), progress
    )
    percentile = float(np.percentile(residuals, pixel_percentile))
    region = dataclasses.replace(region, pixel_scale=positive(percentile, 1.0, "pixel residual percentile"))
    config = dataclasses.replace(config, region=region)

    if is_run:
        save_config(config, source / CONFIG_FILE)
    else:
        update_config(source, config)
    values = {name: getattr(region, name) for name in CALIBRATED}
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "holdout": str(Path(holdout_dir).resolve()),
        "volumes": list(raw_scores),
        "percentiles": {
            "sample": sample_percentile,
            "restore": restore_percentile,
            "pixel": pixel_percentile,
        },
        "restore_rule": restore_rule,
        "values": values,
        "raw_sample_scores": raw_scores,
    }
    write_json(source / CALIBRATION_FILE, report)
    log.info("calibrated %s: %s", source, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return report


def foreground_residuals(
    detector: Detector, settings: Settings, cases: list[Path], progress: bool
) -> np.ndarray:
    """A random sample of the filtered residuals on each volume's foreground (all voxels if it has none)."""
    rng = np.random.default_rng(settings.seed)
    samples = []
    for _, volume in read_volumes(cases, "pixel", progress):
        residual = detector.filtered_residuals(volume, settings)
        mask = foreground_mask(volume, detector.region)
        values = residual[mask] if mask is not None else residual.ravel()
        if values.size > VOXELS_PER_VOLUME:
            values = rng.choice(values, VOXELS_PER_VOLUME, replace=False)
        samples.append(values)
    return np.concatenate(samples)


def is_vae_source(source: Path) -> bool:
    """Whether a calibrate source is a VAE run or a VAE weights folder."""
    source = Path(source)
    if (source / RUN_FILE).is_file():
        return run_kind(source) == "vae"
    return (source / CONFIG_FILE).is_file() and is_vae_config(read_json(source / CONFIG_FILE))


def calibrate_vae_source(
    source: Path,
    holdout_dir: Path,
    pixel_percentile: float,
    device: str = "auto",
    batch_size: int = 256,
    seed: int = 0,
    energy: tuple[int, float, float] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Calibrate a VAE run or VAE weights folder in place: every map's scale and the ELBO's.

    Args:
        energy: (steps, alpha, lambda) of vae-energy, as prediction will run it (None: the defaults).
    """
    source = Path(source)
    is_run = (source / RUN_FILE).is_file()
    config, vae = load_vae_run(source) if is_run else load_vae_weights(source)
    detector = VAEDetector(config, vae, resolve_device(device))
    options = (
        {}
        if energy is None
        else dict(zip(("energy_steps", "energy_alpha", "energy_lambda"), energy, strict=True))
    )
    settings = detector.settings(batch_size=batch_size, seed=seed, **options)
    volumes = [
        (case.name, volume) for case, volume in read_volumes(list_cases(Path(holdout_dir)), "maps", progress)
    ]
    if not volumes:
        raise CaseError(holdout_dir, "no readable held-out volume")
    config, report = calibrate_vae(detector, volumes, settings, pixel_percentile)
    report["holdout"] = str(Path(holdout_dir).resolve())
    save_calibrated(source, config, is_run)
    write_json(source / CALIBRATION_FILE, report)
    log.info("calibrated %s: %s", source, ", ".join(f"{k} {v:.4g}" for k, v in report["values"].items()))
    return report
