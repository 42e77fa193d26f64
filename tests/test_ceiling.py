"""scripts/ceiling.py: the toy set's normal volumes rebuilt from its stream, and the APs it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import phantom

from mood_vqad.data.toy import build_toy
from mood_vqad.io import load_volume, save_volume

REPO = Path(__file__).resolve().parents[1]


def table(output: str) -> dict[str, list[str]]:
    """The printed Markdown table as {map: cells}, with its header row under 'map'."""
    rows = [line.strip("|").split("|") for line in output.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_a_perfect_residual_scores_one_and_the_stride_costs_ap(tmp_path):
    normals = tmp_path / "normal"
    normals.mkdir()
    for seed in (1, 2):
        save_volume(
            normals / f"subject{seed}.nii.gz", phantom((40, 40, 40), seed=seed), np.diag([2.0] * 3 + [1])
        )
    toy = tmp_path / "set"
    build_toy(normals, toy, cases=6, normal_fraction=0.34, seed=3, region="brain", progress=False)
    labels = tmp_path / "labels-as-maps"  # a prediction that is the label itself
    labels.mkdir()
    for path in (toy / "toy_label" / "pixel").iterdir():
        save_volume(labels / path.name, load_volume(path)[0])
    command = [sys.executable, REPO / "scripts" / "ceiling.py", "--set", toy, "--normals", normals]
    command += ["--region", "brain", "--seed", "3", "--strides", "1", "8", "--weights", tmp_path / "none"]
    command += ["--predictions", f"label={labels}"]
    found = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = table(found.stdout)
    assert rows["map"] == ["all", "subject1", "subject2"]
    assert rows["oracle residual, full resolution"] == ["1.0000"] * 3  # the normals were rebuilt exactly
    assert rows["label"] == ["1.0000"] * 3
    assert float(rows["label, stride 8"][0]) < float(rows["label, stride 1"][0]) <= 1.0
