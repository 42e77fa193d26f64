"""Anomaly generators: exact labels, values in [0, 1], placement, sizes, reproducibility."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from helpers import phantom

from mood_vqad.data.anomalies import (
    ANOMALY_TYPES,
    BODY_THRESHOLD,
    GENERATORS,
    MIN_RADIUS,
    foreground,
    foreign_patch,
    sample_radius,
    sampling_radius,
)

DEFORMATIONS = ("sink", "source")


def _generate(name: str, volume: np.ndarray, seed: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    generator = GENERATORS[name]
    if name == "foreign_patch":
        generator = partial(foreign_patch, other=phantom((48, 48, 48), seed=99))
    return generator(volume, foreground(volume, "brain"), np.random.default_rng(seed), size)


def test_the_seven_types_are_named_as_in_the_brief():
    assert ANOMALY_TYPES == (
        "uniform_blob",
        "noise_blob",
        "sink",
        "source",
        "reflected_patch",
        "shifted_patch",
        "foreign_patch",
    )


@pytest.mark.parametrize("name", ANOMALY_TYPES)
@pytest.mark.parametrize("size", [MIN_RADIUS, 4.8])
def test_label_is_exactly_the_changed_voxels(name, size):
    volume = phantom((48, 48, 48))
    before = volume.copy()
    new, changed = _generate(name, volume, seed=1, size=size)
    assert np.array_equal(volume, before), "the input volume must not be modified"
    assert new.dtype == volume.dtype and new.shape == volume.shape
    assert changed.dtype == bool and changed.any()
    assert np.array_equal(changed, new != volume)
    assert new.min() >= 0.0 and new.max() <= 1.0


@pytest.mark.parametrize("name", ANOMALY_TYPES)
def test_anomaly_stays_local_and_in_the_foreground(name):
    volume = phantom((48, 48, 48))
    size = 4.0
    _, changed = _generate(name, volume, seed=2, size=size)
    where = np.argwhere(changed)
    assert (where.max(axis=0) - where.min(axis=0)).max() <= 2 * np.ceil(size)
    if name not in DEFORMATIONS:  # deformations also move the rim of whatever their sphere holds
        assert not (changed & (volume == 0)).any()
    else:
        assert (changed & (volume > 0)).any()


@pytest.mark.parametrize("name", ANOMALY_TYPES)
def test_same_seed_same_output_other_seed_other_output(name):
    volume = phantom((48, 48, 48))
    first, first_label = _generate(name, volume, seed=3, size=3.0)
    again, again_label = _generate(name, volume, seed=3, size=3.0)
    other, _ = _generate(name, volume, seed=4, size=3.0)
    assert np.array_equal(first, again) and np.array_equal(first_label, again_label)
    assert not np.array_equal(first, other)


def test_radius_range_scales_with_the_field_of_view():
    rng = np.random.default_rng(0)
    for side in (48, 64, 128, 256, 512):
        radii = [sample_radius((side, side, side), rng) for _ in range(200)]
        assert MIN_RADIUS <= min(radii) and max(radii) <= 0.1 * side
        assert max(radii) > 0.05 * side  # the range is used, not just its low end


def test_sink_samples_farther_out_and_source_nearer_in():
    r = np.linspace(0.0, 5.0, 11)
    sink_rho = sampling_radius(r, 5.0, 2.0, "sink")
    source_rho = sampling_radius(r, 5.0, 2.0, "source")
    assert np.all(sink_rho >= r - 1e-12) and np.all(source_rho <= r + 1e-12)
    for rho in (sink_rho, source_rho):  # the centre and the sphere's surface stay put
        assert rho[0] == 0.0 and rho[-1] == pytest.approx(5.0)
        assert np.all(np.diff(rho) > 0)


def test_foreground_rules():
    volume = np.array([0.0, BODY_THRESHOLD / 2, 0.5], dtype=np.float32).reshape(1, 1, 3)
    assert foreground(volume, "brain").tolist() == [[[False, True, True]]]
    assert foreground(volume, "abdom").tolist() == [[[False, False, True]]]


def test_foreign_patch_needs_the_same_shape():
    volume = phantom((48, 48, 48))
    with pytest.raises(ValueError, match="shape"):
        foreign_patch(volume, volume > 0, np.random.default_rng(0), 3.0, other=volume[:-1])


def test_empty_foreground_is_refused():
    volume = phantom((48, 48, 48))
    with pytest.raises(ValueError, match="empty"):
        GENERATORS["uniform_blob"](volume, np.zeros(volume.shape, bool), np.random.default_rng(0), 3.0)
