"""Gross outliers (noise, a constant, the wrong region) rank above plausible volumes, with shipped weights."""

from pathlib import Path

import numpy as np
import pytest
from helpers import phantom, run_cli, save_nifti

from mood_vqad.config import ABDOM, BRAIN
from mood_vqad.inference.plausibility import MIN_NEIGHBOUR_CORRELATION, gross_outlier, neighbour_correlation

SHIPPED = Path(__file__).resolve().parents[2] / "weights"
SHAPE = (64, 64, 64)


def test_neighbour_correlation_separates_noise_from_a_smooth_volume():
    noise = np.random.default_rng(0).uniform(0, 1, SHAPE).astype(np.float32)
    assert abs(neighbour_correlation(noise, noise > 0)) < 0.05
    organ = phantom(SHAPE)  # its texture holds 5% noise
    assert neighbour_correlation(organ, organ > 0) > 2 * MIN_NEIGHBOUR_CORRELATION


def test_gross_outlier_names_the_cause():
    noise = np.random.default_rng(1).uniform(0, 1, SHAPE).astype(np.float32)
    assert gross_outlier(np.full(SHAPE, 0.5, np.float32), BRAIN) == "constant"
    assert gross_outlier(noise, ABDOM).startswith("noise-like")
    assert gross_outlier(noise * (phantom(SHAPE) > 0), BRAIN).startswith(
        "noise-like"
    )  # noise in a brain mask
    assert gross_outlier(np.zeros(SHAPE, np.float32), BRAIN).startswith("empty")
    brain = np.zeros(SHAPE, np.float32)
    brain[16:48, 16:48, 16:48] = phantom((32, 32, 32))  # an organ in 1/8 of the field of view
    assert gross_outlier(brain, BRAIN) is None
    assert gross_outlier(brain, ABDOM).endswith("20%-95% expected for abdom")
    assert gross_outlier(phantom(SHAPE), ABDOM) is None


@pytest.mark.parametrize("region", ["brain", "abdom"])
def test_gross_outliers_score_above_plausible_volumes_with_shipped_weights(region, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    rng = np.random.default_rng(2)
    save_nifti(folder / "noise.nii.gz", rng.uniform(0, 1, SHAPE).astype(np.float32))
    save_nifti(folder / "constant.nii.gz", np.full(SHAPE, 0.4, np.float32))
    organ = phantom(SHAPE)
    if region == "brain":  # a body filling the whole field of view
        wrong = np.where(organ > 0, organ, 0.3)
    else:  # a small organ in a field of view of air
        wrong = np.zeros(SHAPE, np.float32)
        wrong[16:48, 16:48, 16:48] = phantom((32, 32, 32))
    save_nifti(folder / "wrong_region.nii.gz", wrong.astype(np.float32))
    for seed in range(2):
        save_nifti(folder / f"plausible{seed}.nii.gz", phantom(SHAPE, seed=seed))
    result = run_cli("predict", "sample", folder, out, "--weights", SHIPPED, "--region", region)
    assert result.returncode == 0, result.stderr
    scores = {p.name.split(".")[0]: float(p.read_text()) for p in out.iterdir()}
    plausible = max(scores["plausible0"], scores["plausible1"])
    assert plausible < 0.5 <= min(scores["noise"], scores["constant"], scores["wrong_region"]), scores
