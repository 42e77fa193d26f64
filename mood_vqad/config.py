"""Hyper-parameters, per-region settings and training options, as frozen dataclasses saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FORMAT = 1


@dataclass(frozen=True)
class VQVAEConfig:
    """2D VQ-VAE over slices; each entry of `channels` after the first adds one stride-2 stage."""

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 256)
    res_blocks: int = 1
    num_codes: int = 128
    code_dim: int = 256
    commitment: float = 1.0
    ema_decay: float = 0.99
    position_channel: bool = True


@dataclass(frozen=True)
class PriorConfig:
    """PixelSNAIL prior over a grid of codes."""

    num_codes: int = 128
    grid: tuple[int, int] = (20, 20)
    channels: int = 128
    blocks: int = 4
    res_blocks: int = 4
    attention_dim: int = 64
    dropout: float = 0.1
    position_channel: bool = True


@dataclass(frozen=True)
class RegionConfig:
    """Everything a region's prediction needs that is not a network weight.

    Thresholds are per-code negative log-likelihoods in nats; `*_scale` map non-negative scores into
    [0, 1) by s / (s + scale), which is monotone and never saturates.
    """

    name: str = "brain"
    volume_shape: tuple[int, int, int] = (256, 256, 256)
    slice_axis: int = 2
    slice_size: int = 160
    intensity: str = "zscore"  # "zscore" (brain, on non-zero voxels) or "affine" (x * scale + offset)
    low_cut: float = 0.05
    affine_scale: float = 2.0
    affine_offset: float = -1.0
    edge_slices: int = 20
    slice_stride: int = 8
    restorations: int = 15
    sample_threshold: float = 7.0
    sample_scale: float = 200.0
    restore_threshold: float = 5.0
    masking: str = "static"  # "static" (mask once) or "dynamic" (the authors': re-test in context)
    neighbour_rule: bool = False
    weight_temperature: float | None = 3.0  # None: plain mean over restorations
    min_filter: int = 3
    mean_filter: tuple[int, int, int] = (3, 7, 7)  # (slices, rows, columns)
    pixel_scale: float = 0.5
    foreground_threshold: float | None = 0.0  # voxels <= this are background and score 0; None keeps all


@dataclass(frozen=True)
class TrainOptions:
    """How to train (the networks' sizes live in ModelConfig); batch_size is per process."""

    steps: int = 100_000
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.1
    val_every: int = 1000
    val_batches: int = 20
    checkpoint_every: int = 1000
    log_every: int = 50
    restart_every: int = 100  # VQ-VAE: steps between dead-code restarts (0: never)
    dead_usage: float = 0.01  # VQ-VAE: EMA assignments per step below which a code counts as dead
    amp: str = "auto"  # auto (bf16 where supported, else fp16), bf16, fp16 or off; the CPU always runs fp32
    device: str = "auto"
    resume: bool = False
    progress: bool = True


BRAIN = RegionConfig()
ABDOM = RegionConfig(
    name="abdom",
    volume_shape=(512, 512, 512),
    intensity="affine",
    low_cut=0.0,
    edge_slices=0,
    slice_stride=16,
    foreground_threshold=None,
)
REGION_DEFAULTS = {"brain": BRAIN, "abdom": ABDOM}
REGIONS = tuple(REGION_DEFAULTS)
# vqvae-restoration: the prior restores unlikely codes; vqvae-rec: plain reconstruction, no prior (a floor).
METHODS = ("vqvae-restoration", "vqvae-rec")
# The abdomen's 160 x 160 slices go through one more stride-2 stage, to a 10 x 10 code grid.
ABDOM_VQVAE = VQVAEConfig(channels=(16, 32, 64, 128, 256))
ABDOM_PRIOR = PriorConfig(grid=(10, 10))


@dataclass(frozen=True)
class ModelConfig:
    """The three configs that make one region's model."""

    region: RegionConfig = field(default_factory=RegionConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)


def model_defaults(region: str) -> ModelConfig:
    """The authors' model of a region: brain 20 x 20 code grids, abdomen 10 x 10 (raises KeyError)."""
    if region == "abdom":
        return ModelConfig(region=ABDOM, vqvae=ABDOM_VQVAE, prior=ABDOM_PRIOR)
    return ModelConfig(region=REGION_DEFAULTS[region])


def dataclass_from_json(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a frozen dataclass from JSON values, turning lists back into tuples; unknown keys fail."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of a model config."""
    return {"format": CONFIG_FORMAT, **dataclasses.asdict(config)}


def from_dict(values: dict[str, Any]) -> ModelConfig:
    """Rebuild a ModelConfig from `to_dict`'s output."""
    if values.get("format") != CONFIG_FORMAT:
        raise ValueError(f"config format {values.get('format')!r}, expected {CONFIG_FORMAT}")
    return ModelConfig(
        region=dataclass_from_json(RegionConfig, values["region"]),
        vqvae=dataclass_from_json(VQVAEConfig, values["vqvae"]),
        prior=dataclass_from_json(PriorConfig, values["prior"]),
    )


def with_overrides(config: ModelConfig, values: dict[str, Any]) -> ModelConfig:
    """Replace some fields: values maps "region" / "vqvae" / "prior" to {field: value}; "format" is ignored.

    Accepts a partial file as well as a whole `to_dict` output; unknown sections or fields raise ValueError.
    """
    sections = {"region": RegionConfig, "vqvae": VQVAEConfig, "prior": PriorConfig}
    unknown = set(values) - set(sections) - {"format"}
    if unknown:
        raise ValueError(f"unknown config sections: {sorted(unknown)}")
    changed = {
        name: dataclass_from_json(cls, {**dataclasses.asdict(getattr(config, name)), **values[name]})
        for name, cls in sections.items()
        if name in values
    }
    return dataclasses.replace(config, **changed)


def save_config(config: ModelConfig, path: Path) -> None:
    """Write a model config as indented JSON."""
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_config(path: Path) -> ModelConfig:
    """Read a model config written by `save_config`."""
    return from_dict(json.loads(Path(path).read_text()))
