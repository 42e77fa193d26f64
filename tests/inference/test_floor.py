"""The intensity floor: map shape and range, it finds a bright block, its settings, and predict's CLI."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
from helpers import phantom, run_cli, save_nifti, tiny_config

from mood_vqad.config import ABDOM, BRAIN, PredictOptions, save_config
from mood_vqad.evaluation.metrics import average_precision, count_values, ranking
from mood_vqad.inference.floor import IntensityFloor, region_config, robust_deviation


def _with_block(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dimmed 48^3 phantom, the same with a block brighter than any of its tissue, and the block's mask."""
    normal = 0.6 * phantom((48, 48, 48), seed=seed)
    mask = np.zeros(normal.shape, dtype=bool)
    mask[20:28, 24:32, 18:26] = True
    return normal, np.where(mask, 1.0, normal).astype(np.float32), mask


def test_map_has_the_volume_shape_is_in_unit_interval_and_zero_outside_the_brain():
    volume = phantom((40, 44, 36))
    floor = IntensityFloor(dataclasses.replace(BRAIN, slice_size=32))
    scores = floor.pixel_scores(
        volume, floor.settings_from(PredictOptions(method="intensity-floor", slice_stride=3))
    )
    assert scores.shape == volume.shape and scores.dtype == np.float32
    assert scores.min() >= 0 and scores.max() < 1
    assert (scores[volume == 0] == 0).all() and scores[volume > 0].max() > 0
    assert 0 <= floor.sample_score(volume, floor.settings_from(PredictOptions(method="intensity-floor"))) < 1


def test_floor_finds_a_bright_block_and_scores_its_volume_higher():
    normal, case, mask = _with_block(seed=3)
    floor = IntensityFloor(dataclasses.replace(BRAIN, slice_size=48))
    settings = floor.settings_from(PredictOptions(method="intensity-floor", slice_stride=1))
    scores = floor.pixel_scores(case, settings)
    inside = case > 0
    ap = average_precision(ranking(*count_values(scores[inside], mask[inside])))
    assert ap > 5 * mask[inside].mean()
    assert floor.sample_score(case, settings) > floor.sample_score(normal, settings)


def test_deviation_uses_the_body_where_the_region_keeps_every_voxel():
    volume = np.zeros((10, 10, 10), dtype=np.float32)
    volume[2:8, 2:8, 2:8] = 0.5
    volume[4, 4, 4] = 0.9
    deviation = robust_deviation(volume, ABDOM)
    # the body's median is 0.5 and its MAD 0 (the floor of 1e-6 divides); air, off the body, scores 0
    assert deviation[2, 2, 2] == 0 and deviation[4, 4, 4] > 1e3 and deviation[0, 0, 0] == 0


def test_settings_come_from_the_weights_config_else_the_defaults(tmp_path):
    config = tiny_config(BRAIN, min_filter=1)
    (tmp_path / "brain").mkdir()
    save_config(config, tmp_path / "brain" / "config.json")
    assert region_config(tmp_path / "brain", "brain") == config.region
    assert region_config(tmp_path / "abdom", "abdom") == ABDOM
    floor = IntensityFloor.load(tmp_path / "brain")
    assert (
        floor.settings_from(
            PredictOptions(method="intensity-floor", restorations=4, masking="dynamic")
        ).slice_stride
        == config.region.slice_stride
    )


def test_predict_cli_writes_both_tasks_without_any_weights(tmp_path):
    cases, pixel, sample, weights = (tmp_path / n for n in ("cases", "pixel", "sample", "weights"))
    for folder in (cases, pixel, sample, weights):
        folder.mkdir()
    normal, case, _ = _with_block(seed=0)
    save_nifti(cases / "a.nii.gz", case)
    save_nifti(cases / "b.nii.gz", normal)
    for task, out in (("pixel", pixel), ("sample", sample)):
        done = run_cli(
            "predict", task, cases, out, "--method", "intensity-floor", "--region", "brain",
            "--weights", weights, "--device", "cpu",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    written = np.asarray(nib.load(str(pixel / "a.nii.gz")).dataobj)
    assert written.shape == (48, 48, 48) and 0 <= written.min() and written.max() < 1
    values = [float((sample / f"{n}.nii.gz.txt").read_text()) for n in "ab"]
    assert values[0] > values[1]
