"""The `mood-vqad` command line: one sub-command per pipeline stage."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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
        help="folder with one sub-folder per region (default: the weights installed with the package)",
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
    weights = args.weights or str(default_weights_dir())
    failed = predict_folder(args.task, args.input_dir, args.output_dir, weights, options)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every default shown by -h."""
    parser = argparse.ArgumentParser(prog="mood-vqad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict(sub)
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
