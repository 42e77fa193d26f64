"""The command line's entry point: no torch for help and argument errors, one-line user errors, and
tracebacks of unexpected errors with -v only."""

import subprocess
import sys

import pytest
from helpers import run_cli

NO_TORCH = """
import sys
import mood_vqad.cli
mood_vqad.cli.build_parser()
for argv in (["predict", "-h"], ["--help"], ["predict", "sample"], ["train", "vqvae", "-h"]):
    try:
        mood_vqad.cli.main(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2), (argv, exc.code)
assert "torch" not in sys.modules, "torch was imported"
"""


def test_help_and_argument_errors_never_import_torch():
    result = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "the following arguments are required" in result.stderr


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_user_error_is_one_line_even_with_verbose(tmp_path, verbose):
    (tmp_path / "holdout").mkdir()
    result = run_cli(*verbose, "calibrate", tmp_path / "nothing", tmp_path / "holdout", "--device", "cpu")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ERROR: {tmp_path / 'nothing'}: no config.json (no weights for this region)"
    ]


def test_an_unexpected_error_is_a_hint_and_its_traceback_with_verbose(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{ not json")
    plain = run_cli("export", run, tmp_path / "weights")
    assert plain.returncode == 1
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and "JSONDecodeError" in lines[0] and "-v" in lines[0]
    verbose = run_cli("-v", "export", run, tmp_path / "weights")
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr and "read_json" in verbose.stderr
