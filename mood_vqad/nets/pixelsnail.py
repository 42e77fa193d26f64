"""PixelSNAIL autoregressive prior over grids of VQ-VAE codes, strictly causal in raster order.

Follows Chen et al. 2018 (PixelSNAIL) with the gated residual blocks and shifted convolutions of
Salimans et al. 2017 (PixelCNN++). Attention keys and values are pooled to half resolution; a query at
(i, j) only sees pooled cells whose every position precedes or equals (i, j), and features at a position
depend only on codes strictly before it, so the logits at (i, j) depend only on codes before (i, j).
Because every layer is causal, running the prior on the first rows of a grid gives exactly the logits of
those rows: restoration uses that to skip the rows below the current one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from mood_vqad.config import PriorConfig


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (top row zero): (B, C, H, W) -> same shape."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (left column zero): (B, C, H, W) -> same shape."""
    return F.pad(x, (1, 0))[..., :-1]


class DownShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees rows i-kh+1..i, columns centred on j: the vertical stack's convolution."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int]):
        super().__init__(c_in, c_out, kernel)
        half = (kernel[1] - 1) // 2
        self.padding_lrtb = (half, half, kernel[0] - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))


class DownRightShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees rows i-kh+1..i and columns j-kw+1..j: the horizontal stack's convolution."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int]):
        super().__init__(c_in, c_out, kernel)
        self.padding_lrtb = (kernel[1] - 1, 0, kernel[0] - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))


class GatedResBlock(nn.Module):
    """PixelCNN++ gated residual block with an optional causal auxiliary input and a conditioning map."""

    def __init__(
        self,
        channels: int,
        conv: type[nn.Conv2d],
        kernel: tuple[int, int],
        cond_channels: int,
        dropout: float,
        aux: bool = False,
    ):
        super().__init__()
        self.conv1 = conv(channels, channels, kernel)
        self.aux = nn.Conv2d(channels, channels, 1) if aux else None
        self.conv2 = conv(channels, 2 * channels, kernel)
        self.cond = nn.Conv2d(cond_channels, 2 * channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.elu(x))
        if self.aux is not None:
            h = h + self.aux(F.elu(aux))
        h = self.conv2(self.dropout(F.elu(h))) + self.cond(cond)
        value, gate = h.chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)


@lru_cache(maxsize=64)
def _attention_mask(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H*W, ceil(H/2)*ceil(W/2)) bool: query (i, j) may use pooled cell (a, b) iff the cell's last
    position (2a+1, 2b+1) comes at or before (i, j) in raster order."""
    i = torch.arange(height, device=device).view(-1, 1, 1, 1)
    j = torch.arange(width, device=device).view(1, -1, 1, 1)
    last_row = (2 * torch.arange((height + 1) // 2, device=device) + 1).view(1, 1, -1, 1)
    last_col = (2 * torch.arange((width + 1) // 2, device=device) + 1).view(1, 1, 1, -1)
    allowed = (last_row < i) | ((last_row == i) & (last_col <= j))  # (H, W, H2, W2)
    return allowed.reshape(height * width, -1)


class CausalAttention(nn.Module):
    """Single-head attention from every position to half-resolution cells entirely in its past."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.query = nn.Conv2d(channels, dim, 1)
        self.key = nn.Conv2d(channels, dim, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.scale = 1 / math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pooled = F.avg_pool2d(F.pad(x, (0, w % 2, 0, h % 2)), 2)  # (B, C, ceil(H/2), ceil(W/2))
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, H*W, d)
        k = self.key(pooled).flatten(2)  # (B, d, H2*W2)
        v = self.value(pooled).flatten(2).transpose(1, 2)  # (B, H2*W2, C)
        mask = _attention_mask(h, w, x.device)
        logits = (q @ k) * self.scale  # (B, H*W, H2*W2)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        # Positions with no visible cell (the first rows) get a uniform softmax: zero them exactly.
        weights = torch.softmax(logits, dim=-1) * mask
        out = (weights @ v).transpose(1, 2).reshape(b, c, h, w)
        return self.out(out)


class SnailBlock(nn.Module):
    """Several gated residual blocks on both stacks, then causal attention on the horizontal stack."""

    def __init__(self, config: PriorConfig, cond_channels: int):
        super().__init__()
        c, p = config.channels, config.dropout
        self.vertical = nn.ModuleList(
            GatedResBlock(c, DownShiftedConv2d, (2, 3), cond_channels, p) for _ in range(config.res_blocks)
        )
        self.horizontal = nn.ModuleList(
            GatedResBlock(c, DownRightShiftedConv2d, (2, 2), cond_channels, p, aux=True)
            for _ in range(config.res_blocks)
        )
        self.attention = CausalAttention(c, config.attention_dim)

    def forward(
        self, u: torch.Tensor, ul: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for vertical, horizontal in zip(self.vertical, self.horizontal, strict=True):
            u = vertical(u, cond)
            ul = horizontal(ul, cond, aux=u)
        return u, ul + self.attention(ul)


class PixelSNAIL(nn.Module):
    """Logits over K codes at every grid position given the codes before it and the slice position."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        c = config.channels
        cond_channels = 3 if config.position_channel else 2
        self.embedding = nn.Embedding(config.num_codes, c)
        self.start_vertical = DownShiftedConv2d(c + cond_channels, c, (2, 3))
        self.start_top = DownShiftedConv2d(c + cond_channels, c, (1, 3))
        self.start_left = DownRightShiftedConv2d(c + cond_channels, c, (2, 1))
        self.blocks = nn.ModuleList(SnailBlock(config, cond_channels) for _ in range(config.blocks))
        self.head = nn.Conv2d(c, config.num_codes, 1)

    def conditioning(self, position: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Non-causal inputs: row and column coordinates on the full grid, and the slice position."""
        grid_h, grid_w = self.config.grid
        dtype = self.head.weight.dtype
        rows = torch.arange(height, device=position.device, dtype=dtype) / max(grid_h - 1, 1) - 0.5
        cols = torch.arange(width, device=position.device, dtype=dtype) / max(grid_w - 1, 1) - 0.5
        maps = [rows.view(1, 1, -1, 1).expand(len(position), 1, height, width)]
        maps.append(cols.view(1, 1, 1, -1).expand(len(position), 1, height, width))
        if self.config.position_channel:
            maps.append(position.to(dtype).view(-1, 1, 1, 1).expand(-1, 1, height, width))
        return torch.cat(maps, dim=1)  # (B, 2 or 3, H, W)

    def forward(self, codes: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W) long, positions (B,) -> logits (B, K, H, W); H may be the first rows only."""
        _, h, w = codes.shape
        cond = self.conditioning(position, h, w)
        x = torch.cat([self.embedding(codes).permute(0, 3, 1, 2), cond], dim=1)  # (B, C+cond, H, W)
        u = down_shift(self.start_vertical(x))
        ul = down_shift(self.start_top(x)) + right_shift(self.start_left(x))
        for block in self.blocks:
            u, ul = block(u, ul, cond)
        return self.head(F.elu(ul))

    def nll(self, codes: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Per-code negative log-likelihood in nats, teacher-forced in one pass: (B, H, W)."""
        return F.cross_entropy(self(codes, position).float(), codes, reduction="none")
