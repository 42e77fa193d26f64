"""Toy sets: the challenge's layout and file pairing, labels, reproducibility, and the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import phantom

from mood_vqad.data.anomalies import ANOMALY_TYPES
from mood_vqad.data.toy import build_toy, normal_cases, vary
from mood_vqad.io import save_volume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def normal_dir(tmp_path: Path) -> Path:
    """Two 'subjects' (phantoms of different texture) with a RAS affine."""
    folder = tmp_path / "normal"
    folder.mkdir()
    for seed in (1, 2):
        save_volume(
            folder / f"subject{seed}.nii.gz", phantom((48, 48, 48), seed=seed), np.diag([2.0, 2.0, 2.0, 1.0])
        )
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_layout_and_labels_pair_up_as_the_scorer_reads_them(normal_dir, tmp_path):
    out = tmp_path / "toy_set"
    types = build_toy(normal_dir, out, cases=6, normal_fraction=0.5, seed=0, progress=False)
    cases = sorted(os.listdir(out / "toy"))
    assert cases == [f"toy_{i}.nii.gz" for i in range(6)]
    # the scorer lists every file of a label folder and opens the prediction of the same name
    assert sorted(os.listdir(out / "toy_label" / "pixel")) == cases
    assert sorted(os.listdir(out / "toy_label" / "sample")) == [f"{c}.txt" for c in cases]
    assert sorted(os.listdir(out / "toy_label")) == ["anomaly_types.json", "pixel", "sample"]
    assert json.loads((out / "toy_label" / "anomaly_types.json").read_text()) == types
    assert set(types) == set(cases)

    normal = 0
    for name in cases:
        case = nib.load(str(out / "toy" / name))
        pixel = nib.load(str(out / "toy_label" / "pixel" / name))
        label = int((out / "toy_label" / "sample" / f"{name}.txt").read_text())
        mask = np.asarray(pixel.dataobj)
        values = np.asarray(case.dataobj)
        assert pixel.shape == case.shape == (48, 48, 48)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1
        assert np.allclose(case.affine, pixel.affine)
        assert label == int(mask.any()) == int(bool(types[name]))
        assert set(types[name]) <= set(ANOMALY_TYPES)
        normal += label == 0
    assert normal == 3


def test_same_seed_gives_byte_identical_files(normal_dir, tmp_path):
    build_toy(normal_dir, tmp_path / "a", cases=4, seed=7, progress=False)
    build_toy(normal_dir, tmp_path / "b", cases=4, seed=7, progress=False)
    build_toy(normal_dir, tmp_path / "c", cases=4, seed=8, progress=False)
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")
    assert first != _files(tmp_path / "c")


def test_train_split_draws_its_own_set_and_known_sources_must_match_the_split(normal_dir, tmp_path):
    held_out = build_toy(normal_dir, tmp_path / "h", cases=4, seed=0, progress=False)
    in_distribution = build_toy(normal_dir, tmp_path / "t", cases=4, seed=0, progress=False, split="train")
    assert held_out.keys() == in_distribution.keys() and _files(tmp_path / "h") != _files(tmp_path / "t")
    known = tmp_path / "known"
    known.mkdir()
    save_volume(known / "colin27.nii.gz", phantom((24, 24, 24)), np.eye(4))
    build_toy(known, tmp_path / "ok", cases=1, progress=False, split="train")
    with pytest.raises(ValueError, match="colin27 is a train source"):
        build_toy(known, tmp_path / "bad", cases=1, progress=False)
    save_volume(known / "lung2.nii.gz", phantom((24, 24, 24)), np.eye(4))
    with pytest.raises(ValueError, match="real tumour"):
        build_toy(known, tmp_path / "bad2", cases=1, progress=False, split="train")


def test_existing_set_is_kept_unless_overwritten(normal_dir, tmp_path):
    out = tmp_path / "toy_set"
    build_toy(normal_dir, out, cases=3, progress=False)
    with pytest.raises(FileExistsError):
        build_toy(normal_dir, out, cases=2, progress=False)
    build_toy(normal_dir, out, cases=2, overwrite=True, progress=False)
    assert sorted(os.listdir(out / "toy_label" / "pixel")) == ["toy_0.nii.gz", "toy_1.nii.gz"]


def test_both_kinds_of_case_are_kept():
    rng = np.random.default_rng(0)
    assert len(normal_cases(4, 0.01, rng)) == 1
    assert len(normal_cases(4, 0.99, rng)) == 3
    assert normal_cases(4, 0.0, rng) == set() and normal_cases(4, 1.0, rng) == {0, 1, 2, 3}


@pytest.mark.parametrize("region", ["brain", "abdom"])
def test_variation_keeps_background_and_foreground(region):
    volume = phantom((48, 48, 48))
    for seed in range(4):  # covers flipped and unflipped variants
        varied = vary(volume, np.eye(4), region, np.random.default_rng(seed))
        assert varied.dtype == np.float32 and varied.min() >= 0 and varied.max() <= 1
        if region == "abdom":  # never mirrored: a mirrored abdomen would itself be an anomaly
            assert np.array_equal(varied > 0, volume > 0)
        assert (varied > 0).sum() == (volume > 0).sum()


def test_left_right_axis_comes_from_the_affine():
    volume = np.zeros((8, 8, 8), dtype=np.float32)
    volume[0, 0, 0] = 1.0
    swapped = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)  # axis 1 is x
    flipped = [vary(volume, swapped, "brain", np.random.default_rng(s)) for s in range(8)]
    corners = {tuple(np.argwhere(v > 0)[0]) for v in flipped}
    assert corners == {(0, 0, 0), (0, 7, 0)}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mood_vqad", "--no-progress", "data", "toy", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_cli_builds_the_layout_test_docker_expects(normal_dir, tmp_path):
    data = tmp_path / "DATA"
    for region in ("brain", "abdom"):
        done = _cli(str(normal_dir), str(data), "--region", region, "--cases", "2", "--challenge-layout")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(data / region)
        for task in ("pixel", "sample"):
            assert (data / region / "toy_label" / task).is_dir()
        assert sorted(os.listdir(data / region / "toy")) == ["toy_0.nii.gz", "toy_1.nii.gz"]
    again = _cli(str(normal_dir), str(data), "--cases", "2", "--challenge-layout")
    assert again.returncode == 1 and "--overwrite" in again.stderr
