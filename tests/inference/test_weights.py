"""The weights folder of either family: round trip, fp16 storage, one-line errors for missing or
mismatched weights."""

import dataclasses

import pytest
import torch
from helpers import TINY_PRIOR, tiny_config, tiny_models, tiny_vae_config

from mood_vqad.config import BRAIN
from mood_vqad.errors import WeightsError
from mood_vqad.inference.weights import PRIOR_FILE, VAE_FILE, load_weights, save_weights


def family_config(family: str):
    """A tiny config of a family, and one whose state dict in `file` has other shapes."""
    if family == "vae":
        return tiny_vae_config(), tiny_vae_config(latent_channels=3), VAE_FILE
    config = tiny_config(BRAIN)
    return config, dataclasses.replace(config, prior=dataclasses.replace(TINY_PRIOR, channels=8)), PRIOR_FILE


@pytest.mark.parametrize("family", ["vqvae", "vae"])
@pytest.mark.parametrize("half", [False, True])
def test_round_trip(tmp_path, family, half):
    config, _, _ = family_config(family)
    modules = tiny_models(config)
    save_weights(tmp_path, config, modules, half=half)
    loaded_config, loaded = load_weights(tmp_path)
    assert loaded_config == config and loaded.keys() == modules.keys()
    for file, module in modules.items():
        for name, value in module.state_dict().items():
            tol = 1e-2 if half and "quantizer" not in name else 0.0  # the codebook is stored exactly
            torch.testing.assert_close(loaded[file].state_dict()[name], value, rtol=tol, atol=tol)


@pytest.mark.parametrize("family", ["vqvae", "vae"])
def test_mismatched_missing_and_corrupt_weights(tmp_path, family):
    config, other, file = family_config(family)
    save_weights(tmp_path, config, tiny_models(config))
    save_weights(tmp_path / "other", other, tiny_models(other))
    (tmp_path / file).write_bytes((tmp_path / "other" / file).read_bytes())
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_weights(tmp_path)
    (tmp_path / "SHA256SUMS").unlink()
    with pytest.raises(WeightsError, match="does not match config.json"):
        load_weights(tmp_path)
    (tmp_path / "config.json").write_text('{"format": 1, "vae": {"nope": 1}}')
    with pytest.raises(WeightsError, match="invalid"):
        load_weights(tmp_path)
    with pytest.raises(WeightsError, match="no config.json"):
        load_weights(tmp_path / "nothing")
