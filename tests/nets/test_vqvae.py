"""VQ-VAE contracts: shapes of encode / quantise / decode, EMA codebook updates, dead-code restarts."""

import torch

from mood_vqad.config import VQVAEConfig
from mood_vqad.nets.vqvae import VQVAE

CONFIG = VQVAEConfig(channels=(4, 8, 16), res_blocks=1, num_codes=16, code_dim=8)


def test_encode_decode_shapes():
    torch.manual_seed(0)
    model = VQVAE(CONFIG).eval()
    x, position = torch.randn(3, 1, 32, 32), torch.tensor([-0.5, 0.0, 0.5])
    codes = model.encode(x, position)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.long and codes.max() < CONFIG.num_codes
    assert model.decode(codes, position).shape == x.shape
    out = model(x, position)
    assert torch.equal(out["codes"], codes)
    torch.testing.assert_close(out["recon"], model.decode(codes, position))


def test_slice_position_conditions_the_decoder():
    torch.manual_seed(0)
    model = VQVAE(CONFIG).eval()
    codes = torch.randint(0, CONFIG.num_codes, (1, 8, 8))
    assert not torch.allclose(
        model.decode(codes, torch.tensor([-0.5])), model.decode(codes, torch.tensor([0.5]))
    )


def test_ema_moves_used_codes_towards_their_latents_and_restart_revives_dead_ones():
    torch.manual_seed(0)
    model = VQVAE(CONFIG).train()
    before = model.quantizer.codebook.clone()
    out = model(torch.randn(4, 1, 32, 32), torch.zeros(4))
    used = out["codes"].unique()
    assert not torch.equal(model.quantizer.codebook[used], before[used])
    model.quantizer.cluster_size[:3] = 0.0
    assert model.quantizer.restart_dead_codes(out["latents"]) >= 3
    assert (model.quantizer.cluster_size[:3] == 1.0).all()


def test_loss_backpropagates_to_encoder_and_decoder():
    torch.manual_seed(0)
    model = VQVAE(CONFIG).train()
    model(torch.randn(2, 1, 32, 32), torch.zeros(2))["loss"].backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
    assert model.decoder.net[0].weight.grad.abs().sum() > 0
