"""Hyper-parameters, per-region settings and training options, as frozen dataclasses saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mood_vqad.errors import ConfigError

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
class VAEConfig:
    """2D (beta-)VAE over slices with a spatial Gaussian latent (latent_channels, S / 2^n, S / 2^n).

    `beta` weighs the KL term (1: the plain VAE); `rec_loss` is the per-pixel reconstruction term, "l1"
    (Laplace likelihood) or "l2" (Gaussian). Both terms are summed over a slice, so beta is comparable
    across slice sizes; the logged losses are divided by the pixels of a slice.
    """

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    res_blocks: int = 1
    latent_channels: int = 16
    beta: float = 1.0
    rec_loss: str = "l2"
    position_channel: bool = True

    def __post_init__(self) -> None:
        if self.rec_loss not in ("l1", "l2"):
            raise ValueError(f"rec_loss must be 'l1' or 'l2', got {self.rec_loss!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class VAEScales:
    """Scales s of squash(value, s) for each VAE map and for the ELBO sample score.

    Set by `calibrate` on held-out normal volumes: a high percentile of each filtered map on their
    foreground, and the median of their raw ELBO scores.
    """

    rec: float = 0.5
    elbo_grad: float = 1.0
    kl_grad: float = 0.1
    combi: float = 0.1
    energy: float = 0.5
    elbo: float = 1e6
    calibrated: bool = False


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
    # z-score only: the value given to voxels below low_cut. None leaves them z-scored with the rest, at
    # -mean / std, which differs between subjects (-2.6 to -4.8 in our five brains), so an unseen subject's
    # background is a level the decoder never saw and takes codes of its own.
    background: float | None = None
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
    restore_quantile: float | None = None  # per volume, raise restore_threshold to this quantile of its NLL
    # Take that quantile over the codes that cover foreground only: over all codes, the share of
    # background in the scored slices decides how much of the brain is restored (30 % of a brain's codes
    # at the 90th percentile in our toy sets, not 10 %).
    restore_quantile_foreground: bool = False
    weight_temperature: float | None = 3.0  # None: plain mean over restorations
    # Weigh the restoration residual by the share of restorations that changed each code, up-sampled and
    # smoothed by a Gaussian of mask_sigma code cells (Pinaya et al. 2022), so that the decoder's error
    # outside the resampled codes does not count.
    residual_mask: bool = False
    mask_sigma: float = 1.0
    mask_floor: float = 0.0  # the weight left to the residual away from changed codes
    # Per volume, subtract this quantile of the map over the foreground (clipped at 0) before the filters:
    # MOOD's pixel AP pools every voxel of a set, and a subject the decoder reconstructs worse throughout
    # would otherwise outrank the anomalies of the others. None: off (the authors' pipeline).
    baseline_quantile: float | None = None
    min_filter: int = 3
    mean_filter: tuple[int, int, int] = (3, 7, 7)  # (slices, rows, columns)
    # Gaussian after the mean filter, its sigma this share of each axis (0: off; the authors' pipeline), the
    # background counting as zero. Anomalies span several codes and slices, the restoration residual of
    # normal tissue lies along edges.
    smooth: float = 0.0
    # Average the pixel map with that of the volume mirrored along the slices' rows (the flip of training;
    # left-right in both regions), mapped back: the prior reads the mirrored slice's rows in the reverse
    # order, so a code whose context hides an anomaly in one raster order is judged in a second one. Every
    # slice is scored twice.
    mirror_average: bool = False
    # Weigh each pixel's restoration residual by 1 + nll_weight * the NLL of its code above the volume's
    # restoration threshold (up-sampled): a code the prior finds very unlikely counts more than one just
    # above the threshold, whose restoration may only redraw normal tissue. 0: off (the authors' pipeline).
    nll_weight: float = 0.0
    # Restoration draws from softmax(logits / sample_temperature): below 1 they keep to the codes the prior
    # finds likely, so a redrawn normal code less often gets one of the distribution's tail (less residual
    # in normal tissue, less spread between runs). 1: the authors'; in our brains 0.25 and 0.5 gained less
    # than the restorations' random seed moves pixel AP and 1.5 and 2 lost held out (EXPERIMENTS.md), so
    # the shipped weights keep 1.
    sample_temperature: float = 1.0
    pixel_scale: float = 0.5
    foreground_threshold: float | None = 0.0  # voxels <= this are background and score 0; None keeps all

    def __post_init__(self) -> None:
        if self.restore_quantile is not None and not 0.0 < self.restore_quantile < 1.0:
            raise ValueError(f"restore_quantile must lie in (0, 1), got {self.restore_quantile}")
        if self.baseline_quantile is not None and not 0.0 < self.baseline_quantile < 1.0:
            raise ValueError(f"baseline_quantile must lie in (0, 1), got {self.baseline_quantile}")
        if self.nll_weight < 0:
            raise ValueError(f"nll_weight must be >= 0, got {self.nll_weight}")
        if self.sample_temperature <= 0:
            raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature}")
        if not 0.0 <= self.smooth < 0.5:
            raise ValueError(f"smooth must lie in [0, 0.5), got {self.smooth}")


@dataclass(frozen=True)
class TrainOptions:
    """How to train (the networks' sizes live in ModelConfig); batch_size is per process."""

    steps: int = 100_000
    batch_size: int = 32
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": from lr down to LR_FLOOR * lr at the last step
    seed: int = 0
    val_fraction: float = 0.1
    val_every: int = 1000
    val_batches: int = 20
    checkpoint_every: int = 1000
    log_every: int = 50
    restart_every: int = 100  # VQ-VAE: steps between dead-code restarts (0: never)
    # VQ-VAE: no restarts after this step (0: restart to the end), so the decoder settles on a fixed codebook
    restart_until: int = 0
    dead_usage: float = 0.01  # VQ-VAE: EMA assignments per step below which a code counts as dead
    # GPU: auto (bf16 where supported, else fp16), bf16, fp16 or off. CPU: fp32 unless bf16 is asked for.
    amp: str = "auto"
    channels_last: bool = False  # convolutions in channels-last memory order
    threads: int = 0  # intra-op CPU threads (0: torch's default, one per core)
    device: str = "auto"
    resume: bool = False
    progress: bool = True


LR_SCHEDULES = ("constant", "cosine")
LR_FLOOR = 0.05  # cosine's last learning rate, as a share of --lr

VAE_ENSEMBLE = ("rec", "kl-grad", "combi")  # vae-ensemble's maps unless told otherwise
# vae-energy's projection (Dehaene et al.), tuned on synthetic anomalies of a held-out brain (z-scored
# intensities): 10 steps of 0.02. Dehaene et al. run about 100 steps on [0, 1] images; here the update
# grows with the cube of the residual, and steps of 0.05 diverged within 20 steps. More steps need a
# proportionally smaller step size.
ENERGY_ALPHA = 0.02  # step size
ENERGY_LAMBDA = 0.1  # weight of ||x - x0||_1
ENERGY_STEPS = 10


@dataclass(frozen=True)
class PredictOptions:
    """What `predict` and `calibrate` take besides folders; every detector reads what it needs.

    None means the region config's default; the energy options and members are the VAE baselines'.
    """

    region: str = "auto"
    device: str = "auto"
    method: str = "vqvae-restoration"
    restorations: int | None = None
    slice_stride: int | None = None
    masking: str | None = None
    neighbour_rule: bool | None = None
    residual_mask: bool | None = None
    batch_size: int = 256
    seed: int = 0
    skip_existing: bool = False
    progress: bool = True
    energy_steps: int = ENERGY_STEPS
    energy_alpha: float = ENERGY_ALPHA
    energy_lambda: float = ENERGY_LAMBDA
    members: tuple[str, ...] = VAE_ENSEMBLE


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
VQVAE_METHODS = ("vqvae-restoration", "vqvae-rec")
# The VAE baselines of Zhou et al. 2020 (README, "Baselines"): one map per predictor and their ensemble.
VAE_PREDICTORS = ("rec", "elbo-grad", "kl-grad", "combi", "energy")
VAE_METHODS = tuple(f"vae-{name}" for name in VAE_PREDICTORS) + ("vae-ensemble",)
# Each model family and its --method names; a new family is one entry here and one in predict.FAMILIES.
# intensity-floor: no network at all, the robust intensity deviation of each voxel (a no-learning floor).
FLOOR_METHODS = ("intensity-floor",)
# How calibration sets the restoration threshold (mood_vqad/training/restore_rule.py).
RESTORE_RULES = ("percentile", "uniform-cap")
FAMILY_METHODS = {"vqvae": VQVAE_METHODS, "vae": VAE_METHODS, "floor": FLOOR_METHODS}
METHODS = tuple(m for methods in FAMILY_METHODS.values() for m in methods)
# The abdomen's 160 x 160 slices go through one more stride-2 stage, to a 10 x 10 code grid.
ABDOM_VQVAE = VQVAEConfig(channels=(16, 32, 64, 128, 256))
ABDOM_PRIOR = PriorConfig(grid=(10, 10))


@dataclass(frozen=True)
class ModelConfig:
    """The three configs that make one region's model."""

    family: ClassVar[str] = "vqvae"

    region: RegionConfig = field(default_factory=RegionConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)


@dataclass(frozen=True)
class VAEModelConfig:
    """What one region's VAE baseline needs: region settings, the network and the maps' scales."""

    family: ClassVar[str] = "vae"

    region: RegionConfig = field(default_factory=RegionConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    scales: VAEScales = field(default_factory=VAEScales)


def method_family(method: str) -> str:
    """The model family of a --method, a key of FAMILY_METHODS (raises ConfigError otherwise)."""
    for family, methods in FAMILY_METHODS.items():
        if method in methods:
            return family
    raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def model_defaults(region: str, family: str = "vqvae") -> Any:
    """A region's default model: the authors' VQ-VAE (brain 20 x 20 code grids, abdomen 10 x 10), or the
    default VAE baseline (raises KeyError for an unknown region)."""
    if family == "vae":
        return VAEModelConfig(region=REGION_DEFAULTS[region])
    if region == "abdom":
        return ModelConfig(region=ABDOM, vqvae=ABDOM_VQVAE, prior=ABDOM_PRIOR)
    return ModelConfig(region=REGION_DEFAULTS[region])


def dataclass_from_json(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a frozen dataclass from JSON values, turning lists back into tuples; unknown keys fail."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def to_dict(config: ModelConfig | VAEModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of a model config."""
    return {"format": CONFIG_FORMAT, **dataclasses.asdict(config)}


def _sections(cls: type) -> dict[str, type]:
    """A model config class's sections: {name: section dataclass}."""
    defaults = cls()
    return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(cls)}


def config_class(values: dict[str, Any]) -> type[ModelConfig] | type[VAEModelConfig]:
    """The family a config.json's content describes: a VAE baseline if it has a "vae" section."""
    return VAEModelConfig if "vae" in values else ModelConfig


def with_overrides(config: ModelConfig | VAEModelConfig, values: dict[str, Any]) -> Any:
    """Replace some fields: values maps a section ("region", "vqvae", ...) to {field: value}.

    Accepts a partial file as well as a whole `to_dict` output; "format" and the other family's
    sections (a file shared by both) are skipped; unknown sections or fields raise ConfigError.
    """
    sections = _sections(type(config))
    known = set().union(*(_sections(cls) for cls in (ModelConfig, VAEModelConfig)))
    unknown = set(values) - known - {"format"}
    if unknown:
        raise ConfigError(f"unknown config sections: {sorted(unknown)}")
    try:
        changed = {
            name: dataclass_from_json(cls, {**dataclasses.asdict(getattr(config, name)), **values[name]})
            for name, cls in sections.items()
            if name in values
        }
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    return dataclasses.replace(config, **changed)


def from_dict(values: dict[str, Any]) -> ModelConfig | VAEModelConfig:
    """Rebuild a model config of either family from `to_dict`'s output (every section present)."""
    if values.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"config format {values.get('format')!r}, expected {CONFIG_FORMAT}")
    cls = config_class(values)
    missing = set(_sections(cls)) - set(values)
    if missing:
        raise ConfigError(f"missing {cls.__name__} sections: {sorted(missing)}")
    unknown = set(values) - set(_sections(cls)) - {"format"}
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} sections: {sorted(unknown)}")
    return with_overrides(cls(), values)


def save_config(config: ModelConfig | VAEModelConfig, path: Path) -> None:
    """Write a model config as indented JSON."""
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_config(path: Path) -> ModelConfig | VAEModelConfig:
    """Read a model config of either family written by `save_config`."""
    return from_dict(json.loads(Path(path).read_text()))
