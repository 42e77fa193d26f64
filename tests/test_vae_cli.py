"""The VAE baseline on the command line, as a user runs it: prepare, train vae, calibrate, export, predict."""

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import cli_flags, phantom, run_cli, save_nifti, tiny_config

from mood_vqad.config import BRAIN, load_config
from mood_vqad.inference.weights import load_weights
from mood_vqad.training.runs import read_log

SHAPE = (32, 32, 32)
FLAGS = {
    "steps": 4,
    "batch_size": 8,
    "val_fraction": 0.25,
    "val_every": 2,
    "log_every": 2,
    "checkpoint_every": 2,
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vae")
    for folder, seeds in (("data", range(4)), ("holdout", (10,)), ("cases", (20,))):
        (root / folder).mkdir()
        for seed in seeds:
            volume = phantom(SHAPE, seed=seed)
            if folder == "cases":
                volume[10:16, 10:16, 12:18] = 1.0  # a bright block: something to find
            save_nifti(root / folder / f"v{seed}.nii.gz", volume)
    # One --config for both families: the VQ-VAE sections are skipped by `train vae`.
    config = {
        "region": {"slice_size": 32, "slice_stride": 4, "edge_slices": 4},
        "vqvae": {"channels": [4, 8, 16]},
        "vae": {"channels": [4, 8], "latent_channels": 2},
    }
    (root / "tiny.json").write_text(json.dumps(config))
    assert tiny_config(BRAIN).region.slice_size == 32
    (root / "pixel").mkdir()
    (root / "sample").mkdir()
    weights, tiny = root / "weights", root / "tiny.json"
    steps = {
        "prepare": ("prepare", root / "data", root / "cache", "--region", "brain", "--config", tiny),
        "train": (
            "train", "vae", root / "cache", root / "run", "--config", tiny, "--beta", "2",
            *cli_flags(FLAGS),
        ),
        "calibrate": ("calibrate", root / "run", root / "holdout", "--device", "cpu", "--energy-steps", "2"),
        "export": ("export", root / "run", weights, "--half"),
        "pixel": (
            "predict", "pixel", root / "cases", root / "pixel", "--weights", weights, "--method", "vae-combi",
            "--device", "cpu",
        ),
        "sample": (
            "predict", "sample", root / "cases", root / "sample", "--weights", weights,
            "--method", "vae-elbo-grad", "--device", "cpu",
        ),
    }  # fmt: skip
    results = {}
    for name, args in steps.items():
        results[name] = run_cli(*args)
        assert results[name].returncode == 0, f"{name}: {results[name].stderr}"
    return {"root": root, "results": results}


def test_train_vae_logs_both_splits_with_its_beta(pipeline):
    run = pipeline["root"] / "run"
    config = load_config(run / "config.json")
    assert config.vae.beta == 2.0 and config.vae.channels == (4, 8) and config.region.slice_size == 32
    entries = read_log(run)
    assert {e["split"] for e in entries} == {"train", "val"}
    assert all({"loss", "rec_loss", "kl"} <= set(e) for e in entries)
    assert (run / "curves.png").is_file()


def test_calibration_and_export_write_the_vae_folder(pipeline):
    scales = json.loads(pipeline["results"]["calibrate"].stdout)
    assert set(scales) == {"rec", "elbo_grad", "kl_grad", "combi", "energy", "elbo"}
    folder = pipeline["root"] / "weights" / "brain-vae"
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "SHA256SUMS",
        "config.json",
        "vae.pt",
    ]
    config, _ = load_weights(folder)
    assert config.scales.calibrated and config.scales.rec == pytest.approx(scales["rec"])
    assert "beta 2" in (folder / "MODEL_CARD.md").read_text()


def test_predicted_outputs_are_read_as_the_challenge_does(pipeline):
    root = pipeline["root"]
    scores = np.asarray(nib.load(str(root / "pixel" / "v20.nii.gz")).dataobj).astype(np.float16)
    assert scores.shape == SHAPE and np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1
    assert scores.max() > 0
    lines = (root / "sample" / "v20.nii.gz.txt").read_text().splitlines()
    assert len(lines) == 1 and 0.0 <= float(lines[0]) <= 1.0


def test_missing_vae_weights_fail_each_case_with_one_line(pipeline, tmp_path):
    root = pipeline["root"]
    args = (
        "predict",
        "sample",
        root / "cases",
        tmp_path,
        "--weights",
        tmp_path / "none",
        "--method",
        "vae-rec",
    )
    result = run_cli(*args)
    assert result.returncode == 1 and "no usable brain VAE weights" in result.stderr
