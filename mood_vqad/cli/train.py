"""`prepare`, `train`, `calibrate` and `export`: from normal volumes to a shipped weights folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mood_vqad.checks import (
    holdout_fraction,
    non_negative_float,
    non_negative_int,
    percentile,
    positive_float,
    positive_int,
)
from mood_vqad.cli.common import DEVICES, add_command, add_scoring_options, predict_options, read_overrides
from mood_vqad.config import LR_FLOOR, LR_SCHEDULES, REGIONS, RESTORE_RULES, TrainOptions


def add_prepare(sub: argparse._SubParsersAction) -> None:
    """The `prepare` sub-command."""
    p = add_command(sub, "prepare", run_prepare)
    p.add_argument("data_dir", help="folder of .nii.gz training volumes")
    p.add_argument("cache_dir", help="output folder: slices.npy, positions.npy, volume_ids.npy, cache.json")
    p.add_argument("--region", choices=REGIONS, required=True)
    p.add_argument("--config", default=None, help="JSON file whose 'region' section overrides the defaults")
    p.add_argument(
        "--workers", type=positive_int, default=None, help="reading processes (default: CPUs, at most 4)"
    )


def run_prepare(args: argparse.Namespace) -> int:
    """Preprocess a folder of normal volumes once into a slice cache for training."""
    from mood_vqad.config import model_defaults, with_overrides
    from mood_vqad.training.cache import default_workers, prepare_cache
    from mood_vqad.training.tasks import split_overrides

    # the same --config file as `train`: its "augment" section is a training setting, not the cache's
    model_values, _ = split_overrides(read_overrides(args.config))
    region = with_overrides(model_defaults(args.region), model_values).region
    workers = args.workers or default_workers()
    prepare_cache(args.data_dir, args.cache_dir, region, workers, progress=not args.no_progress)
    return 0


def _train_options() -> argparse.ArgumentParser:
    """The options every `train` model takes: folders, --config and TrainOptions' fields."""
    d = TrainOptions()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("cache_dir", help="slice cache written by `prepare`")
    common.add_argument("run_dir", help="folder for config, checkpoint, log and curves")
    common.add_argument(
        "--config",
        default=None,
        help="JSON file: its vqvae / prior / augment (vae: vae / augment) sections override the defaults",
    )
    common.add_argument(
        "--steps", type=positive_int, default=d.steps, help="optimizer steps in all (also when resuming)"
    )
    common.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="per process")
    common.add_argument("--lr", type=positive_float, default=d.lr, help="Adam learning rate")
    common.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=d.lr_schedule,
        help=f"cosine: from --lr down to {LR_FLOOR:g} x --lr at --steps (set from the step: resumes exactly)",
    )
    common.add_argument(
        "--seed", type=non_negative_int, default=d.seed, help="initialisation, data order, augmentation"
    )
    common.add_argument(
        "--val-fraction", type=holdout_fraction, default=d.val_fraction, help="volumes held out"
    )
    common.add_argument(
        "--val-every", type=positive_int, default=d.val_every, help="steps between validations"
    )
    common.add_argument(
        "--val-batches", type=positive_int, default=d.val_batches, help="batches per validation"
    )
    common.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every, help="steps")
    common.add_argument(
        "--log-every", type=positive_int, default=d.log_every, help="steps between log entries"
    )
    common.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default=d.amp,
        help="mixed precision; on the CPU only bf16 applies, and auto takes it where the CPU has "
        "avx512_bf16 or AMX (faster there, far slower without)",
    )
    common.add_argument(
        "--channels-last", action="store_true", help="channels-last convolutions (faster on CPUs)"
    )
    common.add_argument(
        "--threads", type=non_negative_int, default=d.threads, help="CPU threads (0: one per core)"
    )
    common.add_argument("--device", choices=DEVICES, default=d.device, help="auto: GPU if visible")
    common.add_argument("--resume", action="store_true", help="continue from RUN_DIR's checkpoint")
    return common


def add_train(sub: argparse._SubParsersAction) -> None:
    """The `train vqvae|prior|vae` sub-commands."""
    d, common = TrainOptions(), _train_options()
    p = sub.add_parser("train", help="train the VQ-VAE, then the prior (several GPUs: torchrun)")
    models = p.add_subparsers(dest="model", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    v = models.add_parser("vqvae", parents=[common], formatter_class=fmt, help="VQ-VAE on augmented slices")
    v.add_argument(
        "--restart-every",
        type=non_negative_int,
        default=d.restart_every,
        help="steps between dead-code restarts (0: never)",
    )
    v.add_argument(
        "--restart-until",
        type=non_negative_int,
        default=d.restart_until,
        help="last step with dead-code restarts (0: to the end); later steps fit the decoder to fixed codes",
    )
    v.add_argument(
        "--dead-usage",
        type=non_negative_float,
        default=d.dead_usage,
        help="EMA usage below which a code is dead",
    )
    q = models.add_parser("prior", parents=[common], formatter_class=fmt, help="prior on the VQ-VAE's codes")
    q.add_argument("--vqvae", default=None, help="the VQ-VAE's run folder (not needed with --resume)")
    q.add_argument(
        "--augment-codes",
        action="store_true",
        help="learn codes of augmented slices, encoded every step (few subjects: against memorising them)",
    )
    b = models.add_parser(
        "vae", parents=[common], formatter_class=fmt, help="(beta-)VAE baseline on augmented slices"
    )
    b.add_argument(
        "--beta",
        type=non_negative_float,
        default=None,
        help="KL weight (None: the config's vae.beta, 1 = plain VAE)",
    )
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Run `train MODEL`."""
    from mood_vqad.training.tasks import train_autoencoder, train_prior

    fields = TrainOptions.__dataclass_fields__
    options = TrainOptions(
        **{k: v for k, v in vars(args).items() if k in fields}, progress=not args.no_progress
    )
    overrides = read_overrides(args.config)
    if args.model == "prior":
        train_prior(args.cache_dir, args.run_dir, args.vqvae, options, overrides, args.augment_codes)
    else:
        beta = getattr(args, "beta", None)
        train_autoencoder(args.model, args.cache_dir, args.run_dir, options, overrides, beta=beta)
    return 0


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    """The `calibrate` sub-command."""
    p = add_command(sub, "calibrate", run_calibrate)
    p.add_argument(
        "source",
        metavar="WEIGHTS_OR_RUN_DIR",
        help="a region's weights folder or a prior run; a VAE run or WEIGHTS/<region>-vae: the VAE's scales",
    )
    p.add_argument("holdout_dir", help="folder of normal .nii.gz volumes not used for training")
    p.add_argument(
        "--sample-percentile", type=percentile, default=98.0, help="of per-code NLL: sample_threshold"
    )
    p.add_argument(
        "--restore-percentile", type=percentile, default=90.0, help="of per-code NLL: restore_threshold"
    )
    p.add_argument(
        "--pixel-percentile",
        type=percentile,
        default=99.0,
        help="of foreground residuals / maps: their scales",
    )
    p.add_argument(
        "--restore-rule",
        choices=RESTORE_RULES,
        default=RESTORE_RULES[0],
        help="uniform-cap: restore_threshold at most ln(codes), so an overfit prior cannot switch "
        "restoration off (mood_vqad/training/restore_rule.py)",
    )
    add_scoring_options(p)


def run_calibrate(args: argparse.Namespace) -> int:
    """Set thresholds and score scales from held-out normal volumes."""
    from mood_vqad.training.calibrate import calibrate

    percentiles = {
        "sample": args.sample_percentile,
        "restore": args.restore_percentile,
        "pixel": args.pixel_percentile,
    }
    report = calibrate(args.source, args.holdout_dir, percentiles, predict_options(args), args.restore_rule)
    print(json.dumps(report["values"], indent=2))
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """The `export` sub-command."""
    p = add_command(sub, "export", run_export)
    p.add_argument("run_dir", help="a prior or VAE run folder (calibrated)")
    p.add_argument("weights_dir", help="weights folder; the region's sub-folder is (over)written")
    p.add_argument("--half", action="store_true", help="store weights in fp16 (the codebook stays fp32)")
    p.add_argument(
        "--notes", default=None, help="Markdown file appended to the model card (data caveats, results)"
    )


def run_export(args: argparse.Namespace) -> int:
    """Write a prior run's models as WEIGHTS_DIR/<region>/ (a VAE run's: <region>-vae/) for `predict`."""
    from mood_vqad.training.export import export

    notes = Path(args.notes).read_text() if args.notes else ""
    print(export(args.run_dir, args.weights_dir, half=args.half, notes=notes))
    return 0
