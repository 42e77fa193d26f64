"""Region model defaults and partial overrides from JSON."""

import pytest

from mood_vqad.config import BRAIN, REGIONS, model_defaults, to_dict, with_overrides
from mood_vqad.nets.vqvae import VQVAE


@pytest.mark.parametrize("region", REGIONS)
def test_default_prior_grid_is_what_the_vqvae_makes_of_a_slice(region):
    config = model_defaults(region)
    side = config.region.slice_size // VQVAE(config.vqvae).downsampling
    assert config.prior.grid == (side, side) and config.region.name == region


def test_overrides_replace_only_the_given_fields():
    config = with_overrides(model_defaults("brain"), {"vqvae": {"channels": [8, 16]}, "format": 1})
    assert config.vqvae.channels == (8, 16) and config.vqvae.num_codes == 128 and config.region == BRAIN
    assert with_overrides(config, to_dict(model_defaults("abdom"))) == model_defaults("abdom")
    with pytest.raises(ValueError, match="unknown config sections"):
        with_overrides(config, {"priors": {}})
    with pytest.raises(ValueError, match="unknown PriorConfig keys"):
        with_overrides(config, {"prior": {"chanels": 3}})


@pytest.mark.parametrize("value", [1.5, 0.0])
def test_out_of_range_restore_quantile_is_refused_at_load(value):
    with pytest.raises(ValueError, match="restore_quantile"):
        with_overrides(model_defaults("brain"), {"region": {"restore_quantile": value}})


@pytest.mark.parametrize("value", [-0.01, 0.5])
def test_out_of_range_smooth_is_refused_at_load(value):
    with pytest.raises(ValueError, match="smooth"):
        with_overrides(model_defaults("brain"), {"region": {"smooth": value}})
