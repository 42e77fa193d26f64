"""scripts/restoration_share.py: shares above the threshold, the codes' ranking by NLL against sklearn, and
each volume's own threshold with the share of the codes above it outside the foreground."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import covered, phantom_toy_set, tiny_config, tiny_models
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_vqad.config import BRAIN, PredictOptions
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.weights import save_weights
from mood_vqad.io import list_cases, load_volume

REPO = Path(__file__).resolve().parents[1]


def test_code_ranking_matches_sklearn_on_the_nll_of_covered_codes(tmp_path, weights_dir):
    normals, toy = phantom_toy_set(tmp_path, 32)
    command = [sys.executable, REPO / "scripts" / "restoration_share.py", "--region", "brain"]
    command += [
        "--weights",
        weights_dir,
        "--slice-stride",
        "2",
        "--folders",
        f"toy={toy}",
        f"plain={normals}",
    ]
    found = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    shares, ranked = found.split("ranked by NLL")
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in shares.splitlines()]
    rows = {(cells[1], cells[3]): cells for cells in lines if cells[0] == "brain"}
    assert {kind for name, kind in rows if name == "plain"} == {"all"}  # no labels, no split

    detector = VQVAEDetector.load(weights_dir / "brain", torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(slice_stride=2))
    scores, labels = [], []
    for case in list_cases(toy / "toy"):
        volume = load_volume(case)[0]
        label = load_volume(toy / "toy_label" / "pixel" / case.name)[0] > 0
        encoded = detector.encode(volume, settings)
        nll = detector.code_nll(encoded, settings)  # (S, h, w)
        scores.append(nll.flatten().numpy())
        labels.append(covered(detector.region, label, encoded.indices, nll.shape[1:]).flatten())
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    assert 0 < labels.sum() < len(labels)
    anomalous = int(labels.sum())
    assert rows["toy", "anomalous"][2] == str(anomalous)
    threshold = detector.region.restore_threshold
    assert float(rows["toy", "other"][4]) == round(float((scores[~labels] > threshold).mean()), 3)

    line = [c.strip() for c in ranked.strip().splitlines()[-1].strip("|").split("|")]
    assert line[0] == "brain"
    line = line[1:]
    assert line[:3] == ["toy", str(anomalous), str(len(labels) - anomalous)]
    assert float(line[3]) == round(average_precision_score(labels, scores), 4)
    assert float(line[4]) == round(roc_auc_score(labels, scores), 3)


@pytest.mark.parametrize("foreground", [False, True])
def test_per_volume_threshold_and_restored_codes_outside_the_foreground(tmp_path, foreground):
    normals, _ = phantom_toy_set(tmp_path, 32)
    weights_dir = tmp_path / "weights"
    # each volume's threshold is its own 90th percentile of code NLL (over the codes covering foreground
    # where the config says so), so every volume has codes above it
    region = dataclasses.replace(
        BRAIN, restore_threshold=0.0, restore_quantile=0.9, restore_quantile_foreground=foreground
    )
    config = tiny_config(region)
    save_weights(weights_dir / "brain", config, tiny_models(config))
    command = [sys.executable, REPO / "scripts" / "restoration_share.py", "--region", "brain", "--weights"]
    command += [weights_dir, "--slice-stride", "2", "--folders", f"plain={normals}", "--per-volume"]
    found = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    lines = [
        [c.strip() for c in line.strip("|").split("|")] for line in found.split("per volume:")[1].splitlines()
    ]
    rows = {r[2]: [float(v) for v in r[3:]] for r in lines if r[0] == "brain"}
    assert sorted(rows) == sorted(case.name for case in list_cases(normals))

    detector = VQVAEDetector.load(weights_dir / "brain", torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(slice_stride=2))
    for case in list_cases(normals):
        volume = load_volume(case)[0]
        encoded = detector.encode(volume, settings)
        nll = detector.code_nll(encoded, settings).numpy()  # (S, h, w)
        inside = covered(detector.region, volume > 0, encoded.indices, nll.shape[1:])
        threshold = float(np.quantile(nll[inside] if foreground else nll, 0.9))
        above = nll > threshold
        assert 0 < inside.sum() < inside.size and above.any()
        expected = [threshold, above.mean(), (above & ~inside).sum() / above.sum()]
        expected += [nll[~inside].mean(), nll[inside].mean()]
        for value, exact, digits in zip(rows[case.name], expected, [2, 3, 3, 2, 2], strict=True):
            assert abs(value - exact) <= 0.5 * 10**-digits + 1e-6  # as printed; torch and numpy sums differ
