"""Calibration on held-out normal volumes, one driver for both families: thresholds and score scales.

VQ-VAE: the thresholds are percentiles of the per-code NLL of the held-out volumes' scored slices (the
authors' 7 and 5 nats were about the 98th and 90th percentiles on their normal data). `sample_scale` is
the median raw sample score of those volumes, so that a typical normal volume scores 0.5 after `squash`
and anomalies climb towards 1. `pixel_scale` is a high percentile of the filtered restoration residual on
their foreground, so that almost every normal voxel scores below 0.5.
VAE baselines: each map's scale is that percentile of the map on the foreground, and the ELBO's scale the
median raw ELBO. Scores come from the detectors themselves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mood_vqad.baselines.detector import VAEDetector, scale_name
from mood_vqad.config import FAMILY_METHODS, VAE_PREDICTORS, ModelConfig, PredictOptions, save_config
from mood_vqad.errors import CaseError
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.scores import sample_score
from mood_vqad.inference.slicing import foreground_mask
from mood_vqad.inference.weights import CONFIG_FILE, load_weights, update_config
from mood_vqad.io import list_cases, load_volume, write_json
from mood_vqad.predict import resolve_device
from mood_vqad.training import restore_rule
from mood_vqad.training.runs import CALIBRATION_FILE, RUN_FILE, load_run

log = logging.getLogger(__name__)

VOXELS_PER_VOLUME = 200_000  # foreground voxels sampled per held-out volume for a map's percentile
CALIBRATED = ("sample_threshold", "restore_threshold", "sample_scale", "pixel_scale")


@dataclass(frozen=True)
class Holdout:
    """The held-out normal cases, the percentiles to take of them, and whether to show progress bars."""

    cases: list[Path]
    percentiles: dict[str, float]  # "sample", "restore" (VQ-VAE only) and "pixel"
    progress: bool = True
    restore_rule: str = (
        "percentile"  # how the restoration threshold follows from the NLL (training.restore_rule)
    )


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


def foreground_sample(values: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """At most VOXELS_PER_VOLUME values of a map on the foreground (everywhere without a mask)."""
    values = values[mask] if mask is not None else values.ravel()
    if values.size > VOXELS_PER_VOLUME:
        values = rng.choice(values, VOXELS_PER_VOLUME, replace=False)
    return values


def calibrate_vqvae(
    detector: VQVAEDetector, holdout: Holdout, options: PredictOptions
) -> tuple[ModelConfig, dict[str, Any]]:
    """The VQ-VAE's thresholds and scales; returns the calibrated config and the report's values."""
    settings = detector.settings_from(options)
    nll = {
        case: detector.code_nll(detector.encode(volume, settings), settings).cpu()
        for case, volume in read_volumes(holdout.cases, "nll", holdout.progress)
    }
    pooled = torch.cat([n.flatten() for n in nll.values()]).numpy() if nll else np.zeros(0)
    if pooled.size == 0:
        raise CaseError(holdout.cases[0].parent, "no held-out volume gave a scored slice")
    sample_threshold = float(np.percentile(pooled, holdout.percentiles["sample"]))
    restore_threshold = restore_rule.restore_threshold(
        pooled, holdout.percentiles["restore"], holdout.restore_rule, detector.config.prior.num_codes
    )
    raw_scores = {
        case.name: sample_score(n, sample_threshold, settings.slice_stride) for case, n in nll.items()
    }
    scores = np.array(list(raw_scores.values()))
    sample_scale = positive(float(np.median(scores)), float(scores.mean()) or 1.0, "median raw sample score")
    region = dataclasses.replace(
        detector.region,
        sample_threshold=sample_threshold,
        restore_threshold=restore_threshold,
        sample_scale=sample_scale,
    )
    # The residuals depend on the new restore threshold: score with the updated config.
    detector = VQVAEDetector(
        dataclasses.replace(detector.config, region=region), detector.vqvae, detector.prior, detector.device
    )
    settings = detector.settings_from(options)
    rng = np.random.default_rng(settings.seed)
    residuals = [
        foreground_sample(detector.filtered_residuals(volume, settings), foreground_mask(volume, region), rng)
        for _, volume in read_volumes(list(nll), "pixel", holdout.progress)
    ]
    percentile = float(np.percentile(np.concatenate(residuals), holdout.percentiles["pixel"]))
    region = dataclasses.replace(region, pixel_scale=positive(percentile, 1.0, "pixel residual percentile"))
    report = {
        "volumes": list(raw_scores),
        "percentiles": holdout.percentiles,
        "restore_rule": holdout.restore_rule,
        "values": {name: getattr(region, name) for name in CALIBRATED},
        "raw_sample_scores": raw_scores,
    }
    return dataclasses.replace(detector.config, region=region), report


def calibrate_vae(
    detector: VAEDetector, holdout: Holdout, options: PredictOptions
) -> tuple[Any, dict[str, Any]]:
    """The VAE's scales: each map's percentile on the foreground, the ELBO's median; config and report."""
    settings = detector.settings_from(options)
    rng = np.random.default_rng(settings.seed)
    every = dataclasses.replace(settings, method="vae-ensemble", members=VAE_PREDICTORS)
    samples: dict[str, list[np.ndarray]] = {p: [] for p in VAE_PREDICTORS}
    elbo = {}
    for case, volume in read_volumes(holdout.cases, "maps", holdout.progress):
        mask = foreground_mask(volume, detector.region)
        for predictor, values in detector.raw_maps(volume, every).items():
            samples[predictor].append(foreground_sample(values, mask, rng))
        elbo[case.name] = detector.raw_elbo(volume, settings)
    if not elbo:
        raise CaseError(holdout.cases[0].parent, "no readable held-out volume")
    values = {}
    for predictor, parts in samples.items():
        percentile = float(np.percentile(np.concatenate(parts), holdout.percentiles["pixel"]))
        values[scale_name(predictor)] = percentile if percentile > 0 else 1.0
    median = float(np.median(list(elbo.values())))
    values["elbo"] = median if median > 0 else 1.0
    scales = dataclasses.replace(detector.config.scales, **values, calibrated=True)
    report = {
        "volumes": list(elbo),
        "percentiles": {"pixel": holdout.percentiles["pixel"]},
        "energy": {
            "steps": settings.energy_steps,
            "alpha": settings.energy_alpha,
            "lambda": settings.energy_lambda,
        },
        "values": values,
        "raw_elbo": elbo,
    }
    return dataclasses.replace(detector.config, scales=scales), report


Calibrator = Callable[[Any, Holdout, PredictOptions], tuple[Any, dict[str, Any]]]
# Each family's detector class and calibration, by config family.
CALIBRATORS: dict[str, tuple[Any, Calibrator]] = {
    "vqvae": (VQVAEDetector, calibrate_vqvae),
    "vae": (VAEDetector, calibrate_vae),
}


def calibrate(
    source: Path,
    holdout_dir: Path,
    percentiles: dict[str, float],
    options: PredictOptions,
    restore_rule: str = "percentile",
) -> dict[str, Any]:
    """Calibrate a weights folder or a prior / VAE run folder in place; returns what calibration.json holds.

    options: device, batch size, seed, progress and the VAE's energy options, as prediction runs them;
    restore_rule: how the VQ-VAE's restoration threshold follows from the NLL (`training.restore_rule`).
    Raises CaseError if the held-out folder gives no scored slice, WeightsError for unusable weights.
    """
    source = Path(source)
    is_run = (source / RUN_FILE).is_file()
    config, modules = load_run(source) if is_run else load_weights(source)
    detector_class, calibrate_family = CALIBRATORS[config.family]
    detector = detector_class.from_modules(config, modules, resolve_device(options.device))
    # Scoring as prediction's default method does, without the per-volume inner progress bars.
    quiet = dataclasses.replace(options, method=FAMILY_METHODS[config.family][0], progress=False)
    holdout = Holdout(list_cases(Path(holdout_dir)), percentiles, options.progress, restore_rule)
    config, values = calibrate_family(detector, holdout, quiet)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "holdout": str(Path(holdout_dir).resolve()),
        **values,
    }
    if is_run:
        save_config(config, source / CONFIG_FILE)
    else:
        update_config(source, config)
    write_json(source / CALIBRATION_FILE, report)
    log.info("calibrated %s: %s", source, ", ".join(f"{k} {v:.4g}" for k, v in report["values"].items()))
    return report
