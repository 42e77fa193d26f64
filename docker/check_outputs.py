"""Exit 0 when every case of INPUT without its output in OUTPUT is unreadable, else 1 (one line per case).

Run after `mood-vqad predict` reported failed cases: an unreadable case must not fail the whole run (the
challenge stops at a non-zero exit), but a readable case without its output (missing weights, a crash)
must. Readable means the package's own loader accepts the file.

Usage: python check_outputs.py sample|pixel INPUT_FOLDER OUTPUT_FOLDER
"""

import sys
from pathlib import Path

from mood_vqad.io import CaseError, list_cases, load_volume
from mood_vqad.predict import output_path


def is_readable(case: Path) -> bool:
    """Whether the package's loader accepts a case."""
    try:
        load_volume(case)
    except CaseError:
        return False
    return True


def main(task: str, input_dir: str, output_dir: str) -> int:
    """Report readable cases without an output; returns the exit code."""
    try:
        cases = list_cases(Path(input_dir))
    except CaseError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    missing = [case for case in cases if not output_path(Path(output_dir), case, task).is_file()]
    lost = [case for case in missing if is_readable(case)]
    for case in lost:
        print(f"ERROR: {case.name}: readable, but no output was written", file=sys.stderr)
    if lost:
        return 1
    print(
        f"WARNING: {len(missing)} unreadable case(s) skipped, all {len(cases) - len(missing)} others written",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
