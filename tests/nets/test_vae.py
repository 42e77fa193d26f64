"""The VAE baseline: the network's contract, each predictor's map, the energy projection and the weights."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import TINY_VAE, phantom, tiny_models, tiny_vae_config

from mood_vqad.baselines.detector import VAEDetector, VAESettings
from mood_vqad.baselines.maps import elbo_grad_map, energy_projection, kl_grad_map, slice_map
from mood_vqad.config import VAE_METHODS, PredictOptions, VAEConfig
from mood_vqad.errors import WeightsError
from mood_vqad.inference.weights import save_weights
from mood_vqad.nets.vae import VAE
from mood_vqad.predict import DetectorCache


def tiny_vae(config: VAEConfig = TINY_VAE, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(config).eval()


@pytest.mark.parametrize("rec_loss", ["l1", "l2"])
def test_forward_shapes_and_loss_terms(rec_loss):
    model = tiny_vae(dataclasses.replace(TINY_VAE, rec_loss=rec_loss, beta=4.0))
    x, position = torch.randn(3, 1, 32, 32), torch.linspace(-0.5, 0.5, 3)
    mu, logvar = model.encode(x, position)
    assert mu.shape == logvar.shape == (3, 2, 16, 16)
    terms = model.terms(x, position, sample=False)
    assert terms["recon"].shape == x.shape and terms["rec"].shape == terms["kl"].shape == (3,)
    torch.testing.assert_close(terms["loss"], terms["rec"] + 4.0 * terms["kl"])
    assert (terms["kl"] >= 0).all()
    out = model.train()(x, position)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])


def test_invalid_config_raises():
    with pytest.raises(ValueError, match="rec_loss"):
        VAEConfig(rec_loss="l3")
    with pytest.raises(ValueError, match="beta"):
        VAEConfig(beta=-1.0)
    with pytest.raises(ValueError, match="members"):
        VAESettings(slice_stride=1, method="vae-ensemble", members=("nope",))


@pytest.mark.parametrize("map_fn,term", [(elbo_grad_map, "loss"), (kl_grad_map, "kl")])
def test_gradient_maps_match_finite_differences(map_fn, term):
    model = tiny_vae(dataclasses.replace(TINY_VAE, beta=2.0)).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    position = torch.tensor([-0.2, 0.3], dtype=torch.float64)
    analytic = map_fn(model, x, position)  # (2, 8, 8)
    eps = 1e-6
    numeric = torch.zeros_like(x)
    with torch.no_grad():
        for idx in np.ndindex(*x.shape):
            up, down = x.clone(), x.clone()
            up[idx] += eps
            down[idx] -= eps
            diff = (
                model.terms(up, position, False)[term].sum() - model.terms(down, position, False)[term].sum()
            )
            numeric[idx] = diff / (2 * eps)
    torch.testing.assert_close(analytic, numeric.abs()[:, 0], rtol=1e-5, atol=1e-7)


def test_energy_projection_lowers_the_energy_at_every_step():
    model = tiny_vae()
    x0 = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2
    trace: list[torch.Tensor] = []
    projected = energy_projection(model, x0, torch.zeros(4), alpha=1e-3, lam=0.01, steps=10, trace=trace)
    energies = torch.stack(trace)  # (T + 1, S)
    assert energies.shape == (11, 4)
    assert (energies[1:] < energies[:-1]).all(), energies
    assert not torch.equal(projected, x0)
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


def test_energy_projection_recomputes_the_gradient_every_step():
    """Two steps of size a differ from one of size 2a: the second uses the moved input's gradient."""
    model = tiny_vae().double()
    x0 = torch.randn(2, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    position = torch.zeros(2, dtype=torch.float64)
    two = energy_projection(model, x0, position, alpha=0.05, lam=0.1, steps=2)
    one = energy_projection(model, x0, position, alpha=0.05, lam=0.1, steps=1)
    stale = one - (x0 - one)  # a second step with the first step's gradient and weights
    assert not torch.allclose(two, stale)


@pytest.mark.parametrize("predictor", ["rec", "elbo-grad", "kl-grad", "combi", "energy"])
def test_slice_maps_are_batch_independent_and_shaped_like_the_slices(predictor):
    model = tiny_vae()
    x, position = torch.randn(5, 1, 32, 32), torch.linspace(-0.5, 0.5, 5)
    options = (0.01, 0.1, 3)
    whole = slice_map(model, predictor, x, position, batch_size=5, energy_options=options)
    parts = slice_map(model, predictor, x, position, batch_size=2, energy_options=options)
    assert whole.shape == (5, 32, 32) and (whole >= 0).all()
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def detector() -> VAEDetector:
    return VAEDetector(tiny_vae_config(), tiny_vae(), torch.device("cpu"))


@pytest.mark.parametrize("method", VAE_METHODS)
def test_every_method_maps_the_volume_into_unit_interval(detector, method):
    volume = phantom((24, 28, 32), seed=1)
    volume[8:12, 8:12, 10:14] = 1.0
    settings = detector.settings_from(PredictOptions(method=method, energy_steps=3, energy_alpha=0.01))
    scores = detector.pixel_scores(volume, settings)
    assert scores.shape == volume.shape and scores.dtype == np.float32
    assert np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1
    assert scores.max() > 0 and (scores[volume <= 0] == 0).all()
    sample = detector.sample_score(volume, settings)
    assert 0 <= sample <= 1


def test_empty_volume_scores_zero(detector):
    volume = np.zeros((16, 16, 16), dtype=np.float32)
    for method in ("vae-rec", "vae-elbo-grad"):
        settings = detector.settings_from(PredictOptions(method=method))
        assert detector.pixel_scores(volume, settings).max() == 0
        assert detector.sample_score(volume, settings) == 0


def test_ensemble_is_the_mean_of_its_members(detector):
    volume = phantom((20, 20, 20), seed=2)
    members = [
        detector.pixel_scores(volume, detector.settings_from(PredictOptions(method=f"vae-{m}")))
        for m in ("rec", "combi")
    ]
    ensemble = detector.pixel_scores(
        volume, detector.settings_from(PredictOptions(method="vae-ensemble", members=("rec", "combi")))
    )
    np.testing.assert_allclose(ensemble, (members[0] + members[1]) / 2, rtol=1e-5, atol=1e-6)


def test_the_cache_routes_each_family_to_its_folder(tmp_path):
    config = tiny_vae_config()
    save_weights(tmp_path / "brain-vae", config, tiny_models(config))
    cache = DetectorCache(tmp_path, torch.device("cpu"))
    assert isinstance(cache.get("brain", "vae"), VAEDetector)
    with pytest.raises(WeightsError, match="no config.json"):
        cache.get("brain", "vqvae")
