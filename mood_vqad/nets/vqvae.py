"""2D VQ-VAE over slices with an EMA codebook, conditioned on the slice's position in the volume.

Follows van den Oord et al. 2017 (VQ-VAE) and Razavi et al. 2019 (EMA codebook updates), as used by
Marimont & Tarroni 2021 for latent-space restoration.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mood_vqad.config import VQVAEConfig


def position_map(position: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A constant channel per sample holding its slice position: (B,) -> (B, 1, H, W)."""
    return position.view(-1, 1, 1, 1).expand(-1, 1, height, width)


class ResBlock(nn.Module):
    """Residual block: ReLU, 3x3 conv, ReLU, 1x1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Encoder(nn.Module):
    """Slice (+ position channel) -> continuous latents (B, D, H / 2^n, W / 2^n)."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        extra = 1 if config.position_channel else 0
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels + extra, config.channels[0], 3, padding=1)]
        for c_in, c_out in zip(config.channels[:-1], config.channels[1:], strict=True):
            layers += [nn.ReLU(), nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
            layers += [ResBlock(c_out) for _ in range(config.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(config.channels[-1], config.code_dim, kernel_size=1)]
        self.net = nn.Sequential(*layers)
        self.position_channel = config.position_channel

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        if self.position_channel:
            x = torch.cat([x, position_map(position, *x.shape[-2:]).to(x.dtype)], dim=1)
        return self.net(x)


class Decoder(nn.Module):
    """Quantised latents (+ position channel) -> slice."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        extra = 1 if config.position_channel else 0
        top = config.channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim + extra, top, 3, padding=1)]
        layers += [ResBlock(top) for _ in range(config.res_blocks)]
        for c_in, c_out in zip(config.channels[:0:-1], config.channels[-2::-1], strict=True):
            layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
            layers += [ResBlock(c_out) for _ in range(config.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(config.channels[0], config.in_channels, kernel_size=3, padding=1)]
        self.net = nn.Sequential(*layers)
        self.position_channel = config.position_channel

    def forward(self, z: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        if self.position_channel:
            z = torch.cat([z, position_map(position, *z.shape[-2:]).to(z.dtype)], dim=1)
        return self.net(z)


class EMAQuantizer(nn.Module):
    """Nearest-code quantiser whose codebook follows an exponential moving average of its assignments."""

    def __init__(self, num_codes: int, code_dim: int, decay: float, eps: float = 1e-5):
        super().__init__()
        self.decay = decay
        self.eps = eps
        self.register_buffer("codebook", torch.randn(num_codes, code_dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", self.codebook.clone())

    def codes_of(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each latent vector: (B, D, H, W) -> (B, H, W)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()  # (B*H*W, D)
        book = self.codebook.float()
        dist2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]
        return dist2.argmin(1).view(z.shape[0], *z.shape[2:])

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors of a grid of indices: (B, H, W) -> (B, D, H, W)."""
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise z; returns (straight-through z_q, codes, commitment loss)."""
        codes = self.codes_of(z)
        z_q = self.embed(codes).to(z.dtype)
        if self.training:
            self._ema_update(z, codes)
        commitment = F.mse_loss(z, z_q.detach())
        return z + (z_q - z).detach(), codes, commitment

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()  # (N, D)
        onehot = F.one_hot(codes.reshape(-1), self.codebook.shape[0]).float()  # (N, K)
        counts, sums = onehot.sum(0), onehot.t() @ flat
        if dist.is_available() and dist.is_initialized():
            # Every rank must see the same codebook, so the statistics are summed over ranks.
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.cluster_size.numel() * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, min_usage: float = 0.01) -> int:
        """Move codes with EMA usage below min_usage onto random latents of this batch; returns how many."""
        dead = self.cluster_size < min_usage
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        picks = flat[torch.randint(flat.shape[0], (n_dead,), device=flat.device)]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(picks, src=0)
        self.codebook[dead] = picks
        self.embed_sum[dead] = picks
        self.cluster_size[dead] = 1.0
        return n_dead


class VQVAE(nn.Module):
    """Encoder, EMA quantiser and decoder; slices are (B, 1, S, S), positions (B,) in [-0.5, 0.5]."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = EMAQuantizer(config.num_codes, config.code_dim, config.ema_decay)
        self.decoder = Decoder(config)

    @property
    def downsampling(self) -> int:
        """Ratio between the slice size and the code grid size."""
        return 2 ** (len(self.config.channels) - 1)

    def encode(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Slices -> code grids: (B, 1, S, S) -> (B, S/r, S/r) long."""
        return self.quantizer.codes_of(self.encoder(x, position))

    def decode(self, codes: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Code grids -> slices: (B, h, w) -> (B, 1, h*r, w*r)."""
        return self.decoder(self.quantizer.embed(codes), position)

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct x; returns recon, codes, the latents and the training loss terms."""
        z = self.encoder(x, position)
        z_q, codes, commitment = self.quantizer(z)
        recon = self.decoder(z_q, position)
        rec_loss = F.l1_loss(recon, x)
        return {
            "recon": recon,
            "codes": codes,
            "latents": z,
            "rec_loss": rec_loss,
            "commitment": commitment,
            "loss": rec_loss + self.config.commitment * commitment,
        }
