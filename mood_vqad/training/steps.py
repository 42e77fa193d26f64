"""What one training step of each model does: the Task of the VQ-VAE, the VAE and the prior.

`loop.Trainer` runs any of them; `tasks` builds them from a slice cache or a VQ-VAE run's codes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mood_vqad.config import ModelConfig, TrainOptions, VAEModelConfig
from mood_vqad.errors import ConfigError
from mood_vqad.nets.pixelsnail import PixelSNAIL
from mood_vqad.nets.vae import VAE
from mood_vqad.nets.vqvae import VQVAE
from mood_vqad.training.augment import AugmentConfig, augment
from mood_vqad.training.cache import SliceCache
from mood_vqad.training.loop import Cluster, sum_over_ranks


def check_grid(config: ModelConfig, vqvae: VQVAE) -> None:
    """Raise ValueError unless the prior's grid and codebook match what the VQ-VAE makes of the slices."""
    size, ratio = config.region.slice_size, vqvae.downsampling
    grid = (size // ratio, size // ratio)
    if size % ratio or config.prior.grid != grid:
        raise ConfigError(f"prior grid {config.prior.grid} must be slice_size / {ratio} = {grid}")
    if config.prior.num_codes != config.vqvae.num_codes:
        raise ConfigError(
            f"prior.num_codes {config.prior.num_codes} != vqvae.num_codes {config.vqvae.num_codes}"
        )


class VQVAETask:
    """Reconstruction of augmented slices; EMA codebook, dead codes restarted on the batch's latents."""

    kind = "vqvae"
    metrics = ("loss", "rec_loss", "commitment")

    def __init__(
        self, config: ModelConfig, cache: SliceCache, augmentation: AugmentConfig, options: TrainOptions
    ):
        self.model = VQVAE(config.vqvae)
        check_grid(config, self.model)
        self.cache, self.augmentation = cache, augmentation
        self.restart_every, self.dead_usage = options.restart_every, options.dead_usage
        self.restart_until = options.restart_until
        self.restarted = 0  # since the last logged step

    def load(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Cached slices (B, 1, S, S) float16 and their positions (B,)."""
        return torch.from_numpy(self.cache.slices[indices]), torch.from_numpy(self.cache.positions[indices])

    def inputs(self, batch: tuple[torch.Tensor, ...], train: bool) -> tuple[torch.Tensor, ...]:
        """Slices in float32, augmented when training."""
        slices, position = batch
        slices = slices.float()
        return (augment(slices, self.augmentation) if train else slices), position

    def losses(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The VQ-VAE's own forward: loss terms, codes and latents."""
        return model(*inputs)

    def after_step(self, done: int, out: dict[str, torch.Tensor]) -> None:
        """Every restart_every steps up to restart_until, move dead codes onto this batch's latents."""
        restarting = not self.restart_until or done <= self.restart_until
        if self.restart_every and done % self.restart_every == 0 and restarting:
            self.restarted += self.model.quantizer.restart_dead_codes(
                out["latents"].detach(), self.dead_usage
            )

    def usage(self, out: dict[str, torch.Tensor], cluster: Cluster) -> dict[str, float]:
        """Codebook use: perplexity of the step's codes over all processes, dead and restarted codes."""
        counts = torch.bincount(out["codes"].flatten(), minlength=self.model.config.num_codes).float()
        share = sum_over_ranks(counts, cluster)
        share = share / share.sum()
        values = {
            "perplexity": float(torch.exp(-torch.special.xlogy(share, share).sum())),
            "dead_codes": int((self.model.quantizer.cluster_size < self.dead_usage).sum()),
            "restarted": self.restarted,
        }
        self.restarted = 0
        return values


class VAETask(VQVAETask):
    """The negative ELBO of augmented slices (reconstruction + beta * KL), read like the VQ-VAE's."""

    kind = "vae"
    metrics = ("loss", "rec_loss", "kl")

    def __init__(
        self, config: VAEModelConfig, cache: SliceCache, augmentation: AugmentConfig, options: TrainOptions
    ):
        self.model = VAE(config.vae)
        self.cache, self.augmentation = cache, augmentation

    def after_step(self, done: int, out: dict[str, torch.Tensor]) -> None:
        """Nothing to do after a VAE step."""

    def usage(self, out: dict[str, torch.Tensor], cluster: Cluster) -> dict[str, float]:
        """No extra values for the VAE."""
        return {}


class PriorTask:
    """Cross-entropy of the code grids under the prior, teacher-forced in one pass."""

    kind = "prior"
    metrics = ("loss",)

    def __init__(self, config: ModelConfig, codes: np.ndarray, positions: np.ndarray):
        self.model = PixelSNAIL(config.prior)
        self.codes, self.positions = codes, positions

    def load(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Code grids (B, h, w) long and their slice positions (B,)."""
        return torch.from_numpy(self.codes[indices].astype(np.int64)), torch.from_numpy(
            self.positions[indices]
        )

    def inputs(self, batch: tuple[torch.Tensor, ...], train: bool) -> tuple[torch.Tensor, ...]:
        """The codes as they are (see the module docstring)."""
        return batch

    def losses(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Mean per-code NLL in nats."""
        codes, position = inputs
        logits = model(codes, position)  # (B, K, h, w)
        return {"loss": F.cross_entropy(logits.float(), codes)}

    def after_step(self, done: int, out: dict[str, torch.Tensor]) -> None:
        """Nothing to do after a prior step."""

    def usage(self, out: dict[str, torch.Tensor], cluster: Cluster) -> dict[str, float]:
        """No extra values for the prior."""
        return {}


class AugmentedPriorTask(PriorTask):
    """The prior on the codes of augmented slices, encoded at every step by the frozen VQ-VAE.

    Validation encodes un-augmented slices, exactly the codes the predictor sees.
    """

    def __init__(
        self,
        config: ModelConfig,
        cache: SliceCache,
        vqvae: VQVAE,
        augmentation: AugmentConfig,
        device: torch.device,
    ):
        super().__init__(config, np.zeros(0, dtype=np.int16), cache.positions)
        self.cache, self.augmentation = cache, augmentation
        self.vqvae = vqvae.to(device).eval().requires_grad_(False)

    load = VQVAETask.load

    @torch.no_grad()
    def inputs(self, batch: tuple[torch.Tensor, ...], train: bool) -> tuple[torch.Tensor, ...]:
        """Code grids (B, h, w) of the slices, augmented when training, and their positions."""
        slices, position = VQVAETask.inputs(self, batch, train)
        return self.vqvae.encode(slices, position), position
