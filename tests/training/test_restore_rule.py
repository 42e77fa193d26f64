"""The restoration-threshold rules: the percentile, and the cap at ln K that keeps restoration on."""

import math
import shutil

import numpy as np
import pytest
from helpers import phantom, run_cli, save_nifti

from mood_vqad.inference.weights import load_weights
from mood_vqad.training.restore_rule import restore_threshold, uniform_nll


def test_cap_keeps_restoration_on_where_an_overfit_prior_finds_everything_unlikely():
    rng = np.random.default_rng(0)
    overfit = rng.normal(14.0, 2.0, 10_000)  # held-out NLL far above ln 128 = 4.85
    plain = restore_threshold(overfit, 90.0, "percentile", 128)
    capped = restore_threshold(overfit, 90.0, "uniform-cap", 128)
    assert plain == pytest.approx(np.percentile(overfit, 90.0)) and plain > 16
    assert capped == pytest.approx(math.log(128)) == uniform_nll(128)
    assert np.mean(overfit > plain) == pytest.approx(0.10, abs=0.01)
    assert np.mean(overfit > capped) > 0.99
    # a prior that fits its held-out data keeps the percentile: the cap only ever lowers the threshold
    fitted = rng.normal(2.0, 0.5, 10_000)
    assert restore_threshold(fitted, 90.0, "uniform-cap", 128) == restore_threshold(
        fitted, 90.0, "percentile", 128
    )
    with pytest.raises(ValueError, match="restore rule"):
        restore_threshold(fitted, 90.0, "median", 128)


def test_calibrate_cli_applies_the_selected_rule(weights_dir, tmp_path):
    holdout = tmp_path / "holdout"
    holdout.mkdir()
    for seed in range(2):
        save_nifti(holdout / f"n{seed}.nii.gz", phantom((32, 32, 12), seed=30 + seed))
    thresholds = {}
    for rule in ("percentile", "uniform-cap"):
        folder = tmp_path / rule
        shutil.copytree(weights_dir / "brain", folder)
        # a high percentile, so that the tiny random prior's threshold lies above ln 16
        done = run_cli("calibrate", folder, holdout, "--restore-percentile", 99.5, "--restore-rule", rule,
                       "--device", "cpu")  # fmt: skip
        assert done.returncode == 0, done.stderr
        config = load_weights(folder)[0]
        thresholds[rule] = config.region.restore_threshold
    assert thresholds["percentile"] > math.log(16)
    assert thresholds["uniform-cap"] == pytest.approx(math.log(16))
