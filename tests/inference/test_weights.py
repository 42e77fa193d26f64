"""The weights folder: round trip, fp16 storage, and one-line errors for missing or mismatched weights."""

import dataclasses

import pytest
import torch
from helpers import TINY_PRIOR, tiny_config, tiny_models

from mood_vqad.config import BRAIN
from mood_vqad.errors import WeightsError
from mood_vqad.inference.weights import PRIOR_FILE, VQVAE_FILE, load_weights, save_weights


@pytest.mark.parametrize("half", [False, True])
def test_round_trip(tmp_path, half):
    config = tiny_config(BRAIN)
    modules = tiny_models(config)
    vqvae, prior = modules[VQVAE_FILE], modules[PRIOR_FILE]
    save_weights(tmp_path, config, modules, half=half)
    loaded_config, loaded = load_weights(tmp_path)
    loaded_vqvae, loaded_prior = loaded[VQVAE_FILE], loaded[PRIOR_FILE]
    assert loaded_config == config
    tol = 1e-2 if half else 0.0
    for name, value in prior.state_dict().items():
        torch.testing.assert_close(loaded_prior.state_dict()[name], value, rtol=tol, atol=tol)
    torch.testing.assert_close(loaded_vqvae.quantizer.codebook, vqvae.quantizer.codebook, rtol=0, atol=0)


def test_mismatched_missing_and_corrupt_weights(tmp_path):
    config = tiny_config(BRAIN)
    save_weights(tmp_path, config, tiny_models(config))
    other = dataclasses.replace(config, prior=dataclasses.replace(TINY_PRIOR, channels=8))
    save_weights(tmp_path / "other", other, tiny_models(other))
    (tmp_path / PRIOR_FILE).write_bytes((tmp_path / "other" / PRIOR_FILE).read_bytes())
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_weights(tmp_path)
    (tmp_path / "SHA256SUMS").unlink()
    with pytest.raises(WeightsError, match="does not match config.json"):
        load_weights(tmp_path)
    with pytest.raises(WeightsError, match="no config.json"):
        load_weights(tmp_path / "nothing")
