"""A prior run (with its VQ-VAE) or a VAE run exported as the weights folder predict reads, with a card."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mood_vqad import __version__
from mood_vqad.config import ModelConfig, TrainOptions, VAEModelConfig, dataclass_from_json
from mood_vqad.inference.weights import save_weights
from mood_vqad.io import read_json
from mood_vqad.predict import family_dir
from mood_vqad.training.augment import AugmentConfig
from mood_vqad.training.runs import (
    CALIBRATION_FILE,
    CHECKPOINT_FILE,
    RUN_FILE,
    final_losses,
    load_checkpoint,
    load_run,
    read_log,
)

log = logging.getLogger(__name__)

CARD_FILE = "MODEL_CARD.md"
CURVE_ROWS = 12  # validations shown in the card's reconstruction curve


def _losses(final: dict[str, dict[str, Any]]) -> str:
    """'train loss 0.0123 (step 1000), val loss 0.0150 (step 1000)' from a run's last log entries."""
    parts = [
        f"{split} loss {entry['loss']:.4g} (step {entry['step']})" for split, entry in sorted(final.items())
    ]
    return ", ".join(parts) or "not logged"


def _retrain_commands(
    run: dict[str, Any], config: ModelConfig, prior_step: int, calibration: dict[str, Any] | None
) -> str:
    """The commands that rebuild these weights: the runs' options, with the steps they really took."""

    defaults = TrainOptions()

    def flags(options: dict[str, Any], step: int) -> str:
        # the options that change the weights: always the main ones, the others where the run changed them
        keys = ["batch_size", "lr", "seed", "val_fraction"] + [
            k
            for k in ("lr_schedule", "dead_usage", "restart_every", "restart_until", "amp", "channels_last")
            if k in options and options[k] != getattr(defaults, k)
        ]
        words = [
            f"--{k.replace('_', '-')}" if options[k] is True else f"--{k.replace('_', '-')} {options[k]}"
            for k in keys
        ]
        return f"--steps {step} " + " ".join(words)

    rule = (calibration or {}).get("restore_rule", "percentile")

    region = config.region.name
    return "\n".join(
        [
            f"mood-vqad prepare DATA_DIR CACHE_DIR --region {region} --config CONFIG.json",
            f"mood-vqad train vqvae CACHE_DIR VQVAE_RUN --config CONFIG.json "
            f"{flags(run['vqvae_run']['options'], run['vqvae_run']['step'])}",
            f"mood-vqad train prior CACHE_DIR PRIOR_RUN --vqvae VQVAE_RUN --config CONFIG.json "
            f"{flags(run['options'], prior_step)}{' --augment-codes' if run.get('augment') else ''}",
            f"mood-vqad calibrate PRIOR_RUN HOLDOUT_DIR --restore-rule {rule}",
            "mood-vqad export PRIOR_RUN WEIGHTS_DIR",
        ]
    )


def _recorded_augmentation(vqvae_run: Path) -> dict[str, Any] | None:
    """The VQ-VAE run's "augment" settings as its run.json holds them; None where the run is gone."""
    path = vqvae_run / RUN_FILE
    return read_json(path).get("augment", {}) if path.is_file() else None


def _augmentation(augment: dict[str, Any] | None, vqvae_run: Path) -> str:
    """The VQ-VAE run's augmentation settings, one line (or why they are unknown)."""
    if augment is None:
        return f"not recorded ({vqvae_run / RUN_FILE} is gone)"
    return ", ".join(f"{k} {v}" for k, v in augment.items()) or "none"


def _config_line(augment: dict[str, Any] | None, vqvae_run: Path) -> str:
    """What CONFIG.json holds: the folder's config.json plus the "augment" keys the runs changed."""
    line = "CONFIG.json: this folder's config.json (model sizes and region settings)"
    if augment is None:
        return f"{line}; the runs' augmentation is not recorded ({vqvae_run / RUN_FILE} is gone)."
    recorded, defaults = dataclass_from_json(AugmentConfig, augment), AugmentConfig()
    changed = {k: v for k, v in augment.items() if getattr(recorded, k) != getattr(defaults, k)}
    if not changed:
        return f"{line}."
    # weights configs hold no training settings, so the augmentation the runs used travels in the card
    return f'{line} plus the runs\' augmentation: `"augment": {json.dumps(changed)}`.'


def _reconstruction_curve(vqvae_run: Path) -> list[str]:
    """The VQ-VAE's L1 per validation step as a Markdown table, at most CURVE_ROWS rows, the last included."""
    if not (vqvae_run / RUN_FILE).is_file():
        return [f"Not recorded (`{vqvae_run}` is gone)."]
    entries = read_log(vqvae_run)
    val = [e for e in entries if e["split"] == "val"]
    if not val:
        return ["Not recorded (the run logged no validation)."]
    train = {e["step"]: e["rec_loss"] for e in entries if e["split"] == "train"}
    shown = sorted({round(i) for i in np.linspace(0, len(val) - 1, min(CURVE_ROWS, len(val)))})
    rows = []
    for entry in (val[i] for i in shown):
        train_l1 = f"{train[entry['step']]:.4f}" if entry["step"] in train else ""
        rows.append(f"| {entry['step']} | {train_l1} | {entry['rec_loss']:.4f} |")
    return [
        "L1 in z-score units: training, the mean over the augmented batches since the previous log entry;"
        " validation, the held-out volumes un-augmented.",
        "",
        "| step | train L1 | validation L1 |",
        "|---|---|---|",
        *rows,
    ]


def _vqvae_card(run_dir: Path, config: ModelConfig) -> list[str]:
    """The VQ-VAE card's body: data, training, calibration and the commands that rebuild it."""
    run = read_json(Path(run_dir) / RUN_FILE)
    data, vqvae_info = run["data"], run["vqvae_run"]
    vqvae_run = Path(vqvae_info["path"])
    augment = _recorded_augmentation(vqvae_run)
    prior_step = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE)["step"]
    calibration_path = Path(run_dir) / CALIBRATION_FILE
    calibration = read_json(calibration_path) if calibration_path.is_file() else None
    region = config.region
    lines = [
        "VQ-VAE (2D, slice-wise) + PixelSNAIL prior; latent-space restoration (Marimont & Tarroni 2021).",
        "",
        "## Data",
        "",
        f"Slice cache `{data['cache']}`, prepared from `{data['source']}`: {len(data['volumes'])} volumes,"
        f" {data['train_slices']} training and {data['val_slices']} validation slices.",
        "",
        f"Volumes ({len(data['val_volumes'])} held out for validation, marked *):",
        "",
        *[f"- {name}{' *' if name in data['val_volumes'] else ''}" for name in data["volumes"]],
        "",
        "## Training",
        "",
        f"- VQ-VAE: {vqvae_info['step']} steps; {_losses(vqvae_info['final'])}; run `{vqvae_info['path']}`",
        f"- Prior: {prior_step} steps; {_losses(final_losses(run_dir))};"
        f" {'codes of augmented slices' if run.get('augment') else 'codes of the un-augmented slices'}",
        f"- VQ-VAE augmentation:"
        f" {_augmentation(augment, vqvae_run)}. Augmentation transforms the same volumes:"
        " it adds no new subjects.",
        "",
        "### VQ-VAE reconstruction curve",
        "",
        *_reconstruction_curve(vqvae_run),
        "",
        "## Calibration",
        "",
    ]
    if calibration is None:
        lines.append("Not calibrated: the thresholds and scales below are the config's defaults.")
    else:
        lines.append(
            f"On {len(calibration['volumes'])} held-out normal volumes from `{calibration['holdout']}`"
            f" ({calibration['date']}), percentiles {json.dumps(calibration['percentiles'])}."
        )
    return lines + [
        "",
        f"- sample_threshold {region.sample_threshold:.4g} nats, sample_scale {region.sample_scale:.4g}",
        f"- restore_threshold {region.restore_threshold:.4g} nats, pixel_scale {region.pixel_scale:.4g}",
        "",
        "## Retraining",
        "",
        _config_line(augment, vqvae_run),
        "",
        "```",
        _retrain_commands(run, config, prior_step, calibration),
        "```",
    ]


def _vae_card(run_dir: Path, config: VAEModelConfig) -> list[str]:
    """The VAE card's body: data, training, network, scales and the commands that rebuild it."""
    run = read_json(Path(run_dir) / RUN_FILE)
    data, options = run["data"], run["options"]
    step = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE)["step"]
    region, vae, scales = config.region.name, config.vae, config.scales
    calibrated = "calibrated on held-out normal volumes" if scales.calibrated else "defaults, not calibrated"
    scale_values = ", ".join(
        f"{k} {v:.4g}" for k, v in dataclasses.asdict(scales).items() if k != "calibrated"
    )
    held_out = ", ".join(data["val_volumes"]) or "none"
    flags = " ".join(
        f"--{k.replace('_', '-')} {options[k]}" for k in ("steps", "batch_size", "lr", "seed", "val_fraction")
    )
    return [
        "2D (beta-)VAE over slices, spatial latent; the localisation predictors of Zimmerer et al. 2019"
        " and the energy projection of Dehaene et al. 2020 (`--method vae-*`).",
        "",
        f"- Data: `{data['cache']}` ({data['train_slices']} training, {data['val_slices']} validation"
        f" slices; held out: {held_out})",
        f"- Training: {step} steps; {_losses(final_losses(run_dir))}",
        f"- Network: channels {list(vae.channels)}, {vae.latent_channels} latent channels,"
        f" {vae.rec_loss} reconstruction, beta {vae.beta:g}",
        f"- Scales ({calibrated}): {scale_values}",
        "",
        "## Retraining",
        "",
        "```",
        f"mood-vqad prepare DATA_DIR CACHE_DIR --region {region} --config CONFIG.json",
        f"mood-vqad train vae CACHE_DIR VAE_RUN --config CONFIG.json --beta {vae.beta:g} {flags}",
        "mood-vqad calibrate VAE_RUN HOLDOUT_DIR",
        "mood-vqad export VAE_RUN WEIGHTS_DIR",
        "```",
    ]


def _title(config: ModelConfig | VAEModelConfig) -> str:
    if isinstance(config, VAEModelConfig):
        return f"{config.region.name} VAE baseline (beta {config.vae.beta:g})"
    return config.region.name


def model_card(run_dir: Path, config: ModelConfig | VAEModelConfig, half: bool, notes: str = "") -> str:
    """A Markdown description of exported weights: data, training, calibration, notes, how to retrain."""
    body = _vae_card(run_dir, config) if isinstance(config, VAEModelConfig) else _vqvae_card(run_dir, config)
    lines = [
        f"# mood-vqad weights: {_title(config)}",
        "",
        f"Exported {datetime.now(timezone.utc).isoformat(timespec='seconds')} by mood-vqad {__version__}"
        f" from `{Path(run_dir).resolve()}`; {'fp16' if half else 'fp32'} storage, checked by SHA256SUMS.",
        *body,
        "",
    ]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def export(run_dir: Path, weights_dir: Path, half: bool = False, notes: str = "") -> Path:
    """Write a prior run as WEIGHTS_DIR/<region>/, a VAE run as WEIGHTS_DIR/<region>-vae/ (config, state
    dicts, SHA256SUMS, model card with `notes`); returns that folder."""
    config, modules = load_run(run_dir)
    target = family_dir(weights_dir, config.region.name, config.family)
    if not (Path(run_dir) / CALIBRATION_FILE).is_file():
        log.warning("%s is not calibrated: exporting the config's default thresholds and scales", run_dir)
    save_weights(target, config, modules, half=half)
    (target / CARD_FILE).write_text(model_card(Path(run_dir), config, half, notes))
    log.info("exported %s %s weights to %s", config.region.name, config.family, target)
    return target
