"""2D (beta-)VAE over slices, conditioned on the slice's position in the volume: the VAE baselines' network.

Kingma & Welling 2014 (VAE), Higgins et al. 2017 (beta-VAE), as used for anomaly localisation by
Zimmerer et al. 2019. The convolutional encoder and decoder are the VQ-VAE's (same stages, residual
blocks and position channel); the latent is a spatial Gaussian instead of a grid of codes.
"""

from __future__ import annotations

import torch
from torch import nn

from mood_vqad.config import VAEConfig, VQVAEConfig
from mood_vqad.nets.vqvae import Decoder, Encoder


def backbone(config: VAEConfig, code_dim: int) -> VQVAEConfig:
    """The VQ-VAE config whose encoder / decoder has this VAE's stages and `code_dim` latent channels."""
    return VQVAEConfig(
        in_channels=config.in_channels,
        channels=config.channels,
        res_blocks=config.res_blocks,
        code_dim=code_dim,
        position_channel=config.position_channel,
    )


def kl_map(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent element: (B, C, h, w) -> same."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(nn.Module):
    """Encoder to (mu, log-variance), reparameterised sample, decoder; slices (B, 1, S, S), positions (B,)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(backbone(config, 2 * config.latent_channels))
        self.decoder = Decoder(backbone(config, config.latent_channels))

    def encode(self, x: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance: (B, 1, S, S) -> 2 x (B, C, S/r, S/r)."""
        mu, logvar = self.encoder(x, position).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Latents -> slices: (B, C, h, w) -> (B, 1, h*r, w*r)."""
        return self.decoder(z, position)

    def rec_map(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """The per-pixel reconstruction term: |x - recon| (l1) or (x - recon)^2 (l2)."""
        diff = x - recon
        return diff.abs() if self.config.rec_loss == "l1" else diff.pow(2)

    def terms(self, x: torch.Tensor, position: torch.Tensor, sample: bool) -> dict[str, torch.Tensor]:
        """Reconstruction and the loss terms per slice.

        Args:
            sample: draw z from the posterior (training); False decodes its mean (the predictors).
        Returns:
            recon (B, 1, S, S); rec, kl and loss = rec + beta * kl, each (B,) summed over the slice.
        """
        mu, logvar = self.encode(x, position)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        recon = self.decode(z, position)
        rec = self.rec_map(x, recon).flatten(1).sum(1)
        kl = kl_map(mu, logvar).flatten(1).sum(1)
        return {"recon": recon, "rec": rec, "kl": kl, "loss": rec + self.config.beta * kl}

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: the negative ELBO and its terms, batch means per pixel (for readable logs)."""
        out = self.terms(x, position, sample=self.training)
        pixels = x[0].numel()
        rec_loss, kl = out["rec"].mean() / pixels, out["kl"].mean() / pixels
        return {
            "recon": out["recon"],
            "rec_loss": rec_loss,
            "kl": kl,
            "loss": rec_loss + self.config.beta * kl,
        }
