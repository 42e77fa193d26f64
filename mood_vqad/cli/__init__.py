"""The `mood-vqad` command line: one sub-command per pipeline stage.

`score` (predict, evaluate), `train` (prepare, train, calibrate, export) and `data` (fetch, toy) each add
their sub-commands; `common` holds what they share. Building the parser imports no torch: the stages'
modules are imported when a sub-command runs. Sits on top: imports every stage, nothing imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mood_vqad import __version__
from mood_vqad.cli.data import add_data
from mood_vqad.cli.score import add_evaluate, add_predict
from mood_vqad.cli.train import add_calibrate, add_export, add_prepare, add_train
from mood_vqad.errors import UserError

__all__ = ["build_parser", "main"]

log = logging.getLogger("mood_vqad")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every default shown by -h."""
    parser = argparse.ArgumentParser(prog="mood-vqad", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks of bugs")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_prepare, add_train, add_calibrate, add_export, add_predict, add_evaluate, add_data):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mood-vqad` command; returns the process exit code.

    A UserError is one line; anything else is a bug: its traceback with -v, else one line and a hint.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except UserError as exc:
        log.error("%s", exc)
    except Exception as exc:
        if args.verbose:
            log.exception("unexpected %s", type(exc).__name__)
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            log.error("%s: %s (unexpected: rerun with -v for the traceback)", type(exc).__name__, first)
    return 1


if __name__ == "__main__":
    sys.exit(main())
