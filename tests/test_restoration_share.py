"""scripts/restoration_share.py: shares above the threshold and the codes' ranking by NLL, against sklearn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import phantom_toy_set
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_vqad.config import PredictOptions
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.slicing import extract_slices
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
        # a code covers a labelled voxel if its cell of the resized label slice holds any of them
        cells = extract_slices(label.astype(np.float32), detector.region, encoded.indices)  # (S, 1, 32, 32)
        cells = cells.unflatten(2, (nll.shape[1], -1)).unflatten(4, (nll.shape[2], -1)).amax((3, 5))
        scores.append(nll.flatten().numpy())
        labels.append(cells.flatten().numpy() > 0)
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
