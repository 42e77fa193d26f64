"""scripts/ceiling.py: the toy set's normal volumes rebuilt from its stream, and the APs it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import phantom_toy_set

from mood_vqad.config import PredictOptions
from mood_vqad.data.toy import case_base, toy_stream
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.io import list_cases, load_volume, save_volume

REPO = Path(__file__).resolve().parents[1]


def table(output: str) -> dict[str, list[str]]:
    """The printed Markdown table as {map: cells}, with its header row under 'map'."""
    rows = [line.strip("|").split("|") for line in output.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_a_perfect_residual_scores_one_and_the_stride_costs_ap(tmp_path):
    normals, toy = phantom_toy_set(tmp_path, 40, spacing=2.0)
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


def test_the_code_table_encodes_each_case_beside_its_rebuilt_normal_volume(tmp_path, weights_dir):
    normals, toy = phantom_toy_set(tmp_path, 32)
    command = [sys.executable, REPO / "scripts" / "ceiling.py", "--set", toy, "--normals", normals]
    command += ["--region", "brain", "--seed", "3", "--strides", "4", "--weights", tmp_path / "none"]
    command += ["--codes", weights_dir / "brain", "--code-stride", "2"]
    found = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = table(found.split("the prior's ceiling")[1])

    detector = VQVAEDetector.load(weights_dir / "brain", torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(slice_stride=2))
    covered = changed = elsewhere = 0
    nll_sums = np.zeros(2)
    for path in list_cases(toy / "toy"):
        label = load_volume(toy / "toy_label" / "pixel" / path.name)[0] > 0
        if not label.any():
            continue
        i = int(path.stem.split("_")[1].split(".")[0])
        base = case_base(
            normals / f"subject{i % 2 + 1}.nii.gz", toy_stream(3, "brain", "holdout"), i, "brain"
        )[0]
        case = load_volume(path)[0]
        assert np.array_equal(case[~label], base[~label])  # the normal volume is rebuilt exactly
        encoded = [detector.encode(v, settings) for v in (case, base)]
        assert np.array_equal(encoded[0].indices, encoded[1].indices)
        cover = detector.covered_codes(label, encoded[0].indices)
        differ = encoded[0].codes != encoded[1].codes
        covered += int(cover.sum())
        changed += int((differ & cover).sum())
        elsewhere += int((differ & ~cover).sum())
        nll_sums += [float(detector.code_nll(e, settings)[cover].sum()) for e in encoded]
    assert covered > 0
    assert rows["codes"][0] == "all"
    assert rows["codes covering the anomaly"][0] == str(covered)
    assert rows["share of them the anomaly changes"][0] == f"{changed / covered:.2f}"
    assert rows["codes it changes elsewhere"][0] == str(elsewhere)
    assert rows["mean NLL of covered codes, case"][0] == f"{nll_sums[0] / covered:.2f}"
    assert rows["mean NLL of covered codes, normal volume"][0] == f"{nll_sums[1] / covered:.2f}"
