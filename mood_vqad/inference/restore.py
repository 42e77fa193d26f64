"""Latent-space restoration: unlikely codes are resampled from the prior in raster order.

Two masking rules (Marimont & Tarroni 2021): `dynamic` re-tests every code against the partly restored
context, as the authors did; `static` decides once, on the input's codes. The optional neighbour rule
(Wang et al. 2020, "Image anomaly detection using normal data only by latent space resampling")
resamples a code only if one of its later neighbours (i, j+1), (i+1, j-1..j+1) is unlikely too.

`restore` computes exactly what `restore_naive` (one full prior pass over every map per position)
computes, from the same uniform draws, while running the prior only on the maps that need it and only on
the rows up to the current one (the prior is causal, so lower rows cannot change those logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mood_vqad.nets.pixelsnail import PixelSNAIL


@dataclass(frozen=True)
class RestoreRule:
    """Which codes get resampled: NLL above `threshold` (nats) under the chosen masking rule, and the
    temperature of their draws."""

    threshold: float
    masking: str = "dynamic"
    neighbour: bool = False
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.masking not in ("dynamic", "static"):
            raise ValueError(f"masking must be 'dynamic' or 'static', got {self.masking!r}")


def later_neighbour_unlikely(unlikely: torch.Tensor) -> torch.Tensor:
    """True where any of (i, j+1), (i+1, j-1), (i+1, j), (i+1, j+1) is unlikely: (M, H, W) -> same."""
    padded = F.pad(unlikely.float().unsqueeze(1), (1, 1, 0, 1)).squeeze(1)  # (M, H+1, W+2)
    h, w = unlikely.shape[-2:]
    right = padded[:, :h, 2:]
    below = padded[:, 1:, :w] + padded[:, 1:, 1 : w + 1] + padded[:, 1:, 2:]
    return (right + below) > 0


def resample_mask(nll: torch.Tensor, rule: RestoreRule) -> torch.Tensor:
    """Codes the rule would resample, judged on one NLL map: (M, H, W) -> bool (M, H, W)."""
    unlikely = nll > rule.threshold
    return unlikely & later_neighbour_unlikely(unlikely) if rule.neighbour else unlikely


def sample_codes(logits: torch.Tensor, uniform: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Inverse-CDF draws from softmax(logits / temperature): (M, K), (M,) in [0, 1) -> (M,) long."""
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(-1)
    return (cdf < uniform.double().unsqueeze(-1)).sum(-1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def batched_logits(
    prior: PixelSNAIL, codes: torch.Tensor, position: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Prior logits for many maps, batch_size maps at a time: (M, H, W) -> (M, K, H, W) float32."""
    chunks = range(0, len(codes), batch_size)
    return torch.cat([prior(codes[s : s + batch_size], position[s : s + batch_size]).float() for s in chunks])


@torch.no_grad()
def batched_nll(
    prior: PixelSNAIL, codes: torch.Tensor, position: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Teacher-forced per-code NLL for many maps: (M, H, W) -> (M, H, W) float32."""
    chunks = range(0, len(codes), batch_size)
    return torch.cat([prior.nll(codes[s : s + batch_size], position[s : s + batch_size]) for s in chunks])


@torch.no_grad()
def restore_naive(
    prior: PixelSNAIL,
    codes: torch.Tensor,
    position: torch.Tensor,
    rule: RestoreRule,
    uniform: torch.Tensor,
    batch_size: int = 256,
) -> torch.Tensor:
    """Reference restoration: at every raster position one full prior pass over every map.

    Args:
        codes: (M, H, W) code grids; position: (M,) slice positions.
        uniform: (M, H*W) uniform draws in [0, 1), one per map and position.
    Returns:
        (M, H, W) restored codes.
    """
    codes = codes.clone()
    _, h, w = codes.shape
    static = (
        resample_mask(batched_nll(prior, codes, position, batch_size), rule)
        if rule.masking == "static"
        else None
    )
    for p in range(h * w):
        i, j = divmod(p, w)
        logits = batched_logits(prior, codes, position, batch_size)  # (M, K, H, W)
        if static is None:
            todo = resample_mask(F.cross_entropy(logits, codes, reduction="none"), rule)[:, i, j]
        else:
            todo = static[:, i, j]
        drawn = sample_codes(logits[:, :, i, j], uniform[:, p], rule.temperature)
        codes[:, i, j] = torch.where(todo, drawn, codes[:, i, j])
    return codes


@torch.no_grad()
def restore(
    prior: PixelSNAIL,
    codes: torch.Tensor,
    position: torch.Tensor,
    rule: RestoreRule,
    uniform: torch.Tensor,
    batch_size: int = 256,
    progress: bool = False,
    nll: torch.Tensor | None = None,
) -> torch.Tensor:
    """Restoration equal to `restore_naive`, running the prior only where the result can change.

    A map whose codes before position p are all unchanged ("clean") has the input's NLL there, so the
    first parallel pass decides for it; only maps due a draw or already changed ("dirty") are run, and only
    on rows 0..i (0..i+1 when the dynamic neighbour rule must see the next row).
    Arguments and result as in `restore_naive`; `nll`, the codes' teacher-forced NLL (M, H, W), is computed
    when not given (callers that restore one map several times compute it once per map).
    """
    codes = codes.clone()
    m, h, w = codes.shape
    if nll is None:
        nll = batched_nll(prior, codes, position, batch_size)
    initial = resample_mask(nll, rule)  # (M, H, W)
    dynamic = rule.masking == "dynamic"
    look_ahead = 1 if dynamic and rule.neighbour else 0
    dirty = torch.zeros(m, dtype=torch.bool, device=codes.device)
    steps = range(h * w) if dynamic else initial.flatten(1).any(0).nonzero().flatten().tolist()
    for p in tqdm(steps, desc="restore", unit="pos", leave=False, disable=not progress):
        i, j = divmod(p, w)
        due = initial[:, i, j] | dirty if dynamic else initial[:, i, j]
        idx = due.nonzero().flatten()
        if len(idx) == 0:
            continue
        rows = min(i + 1 + look_ahead, h)
        context = codes[idx, :rows]  # (n, rows, W)
        logits = batched_logits(prior, context, position[idx], batch_size)  # (n, K, rows, W)
        old = codes[idx, i, j]
        drawn = sample_codes(logits[:, :, i, j], uniform[idx, p], rule.temperature)
        if dynamic:
            retest = resample_mask(F.cross_entropy(logits, context, reduction="none"), rule)[:, i, j]
            todo = torch.where(dirty[idx], retest, initial[idx, i, j])
            new = torch.where(todo, drawn, old)
            dirty[idx] |= new != old
        else:
            new = drawn
        codes[idx, i, j] = new
    return codes
