"""`predict` (score a folder of cases) and `evaluate` (score predictions against labels)."""

from __future__ import annotations

import argparse
import logging

from mood_vqad.checks import positive_int
from mood_vqad.cli.common import (
    DEFAULTS,
    add_command,
    add_ensemble_option,
    add_scoring_options,
    on_off,
    predict_options,
)
from mood_vqad.config import METHODS, REGIONS

log = logging.getLogger("mood_vqad")


def add_predict(sub: argparse._SubParsersAction) -> None:
    """The `predict` sub-command."""
    p = add_command(sub, "predict", run_predict)
    p.add_argument("task", choices=["sample", "pixel"])
    p.add_argument("input_dir", help="folder of .nii.gz volumes")
    p.add_argument("output_dir", help="existing, writable folder for the outputs")
    p.add_argument(
        "--region",
        choices=["auto", *REGIONS],
        default=DEFAULTS.region,
        help="auto: 512^3 (largest side >= 384) is abdomen, anything smaller brain",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="one sub-folder per region (default: $MOOD_VQAD_WEIGHTS, else the repository's weights/)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULTS.method,
        help="vqvae-restoration: the prior restores unlikely codes; vqvae-rec: plain reconstruction error; "
        "vae-*: the VAE baselines of WEIGHTS/<region>-vae (README, Baselines)",
    )
    p.add_argument(
        "--restorations", type=positive_int, default=None, help="restorations per slice (config default)"
    )
    p.add_argument(
        "--slice-stride", type=positive_int, default=None, help="score every S-th slice (config default)"
    )
    p.add_argument("--masking", choices=["dynamic", "static"], default=None, help="restoration rule (config)")
    p.add_argument(
        "--neighbour-rule",
        type=on_off,
        metavar="{on,off}",
        default=None,
        help="resample a code only if a later neighbour is unlikely too (config default)",
    )
    p.add_argument(
        "--residual-mask",
        type=on_off,
        metavar="{on,off}",
        default=None,
        help="count the residual only near the codes restoration changed (config default)",
    )
    p.add_argument("--continue", dest="skip_existing", action="store_true", help="skip cases already written")
    add_scoring_options(p)
    add_ensemble_option(p)


def run_predict(args: argparse.Namespace) -> int:
    """Score every case of a folder (sample: X.nii.gz.txt, pixel: X.nii.gz)."""
    from mood_vqad.inference.weights import default_weights_dir
    from mood_vqad.predict import predict_folder

    weights = args.weights if args.weights is not None else default_weights_dir()
    failed = predict_folder(args.task, args.input_dir, args.output_dir, weights, predict_options(args))
    return 1 if failed else 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """The `evaluate` sub-command."""
    p = add_command(sub, "evaluate", run_evaluate)
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


def run_evaluate(args: argparse.Namespace) -> int:
    """Score predictions against labels as the MOOD challenge does (AP), plus AUROC and best Dice."""
    from mood_vqad.evaluation.evaluate import default_types_file, evaluate_folder, format_table, to_json
    from mood_vqad.io import write_json

    progress = not args.no_progress
    types_file = args.types if args.types is not None else default_types_file(args.label_dir)
    evaluation = evaluate_folder(args.task, args.pred_dir, args.label_dir, types_file, progress=progress)
    print(format_table(evaluation))
    if args.json is not None:
        write_json(args.json, to_json(evaluation))
        log.info("wrote %s", args.json)
    if args.figures is not None:
        from mood_vqad.evaluation.figures import write_figures

        paths = write_figures(evaluation, args.figures, image_dir=args.images, progress=progress)
        log.info("wrote %d figures to %s", len(paths), args.figures)
    return 0
