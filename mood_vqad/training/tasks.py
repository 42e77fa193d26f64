"""Training of the two models on a slice cache: the VQ-VAE on augmented slices, then the prior on codes.

By default the prior learns the codes of the un-augmented cached slices, encoded once by the trained
VQ-VAE: those are the codes the predictor feeds it, and augmenting spreads the prior's mass over the codes
of deformed anatomy, raising the likelihood of abnormal-looking codes. With few training subjects,
though, the prior memorises their code grids (conditioned on slice position) and finds every new subject
unlikely; `augment_codes` then encodes freshly augmented slices at every step instead.

The VAE baseline (`train vae`) trains like the VQ-VAE, through the same `train_autoencoder`: same cache,
augmentation, loop and run folder.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mood_vqad.config import (
    ModelConfig,
    TrainOptions,
    VAEModelConfig,
    VQVAEConfig,
    dataclass_from_json,
    load_config,
    model_defaults,
    save_config,
    with_overrides,
)
from mood_vqad.errors import ConfigError, RunError
from mood_vqad.inference.weights import CONFIG_FILE, VQVAE_FILE
from mood_vqad.io import read_json, write_atomic, write_json
from mood_vqad.nets.pixelsnail import PixelSNAIL
from mood_vqad.nets.vae import VAE
from mood_vqad.nets.vqvae import VQVAE
from mood_vqad.training.augment import AugmentConfig, augment
from mood_vqad.training.cache import SliceCache
from mood_vqad.training.loop import (
    Cluster,
    Task,
    Trainer,
    barrier,
    split_by_volume,
    start_cluster,
    stop_cluster,
    sum_over_ranks,
)
from mood_vqad.training.runs import CHECKPOINT_FILE, CODES_FILE, RUN_FILE, final_losses, load_checkpoint

log = logging.getLogger(__name__)

ENCODE_BATCH = 256  # slices per VQ-VAE pass when encoding the cache for the prior


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
        """Every restart_every steps, move dead codes onto latents of this batch (all processes at once)."""
        if self.restart_every and done % self.restart_every == 0:
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


def run_config(
    cache: SliceCache, overrides: dict[str, Any], family: str = "vqvae", vqvae: VQVAEConfig | None = None
) -> Any:
    """A family's default model on the cache's region settings (and a trained VQ-VAE's), then overrides.

    Raises ConfigError if the overrides contradict the cache's region or the given VQ-VAE config.
    """
    base = dataclasses.replace(model_defaults(cache.region.name, family), region=cache.region)
    if vqvae is not None:
        base = dataclasses.replace(base, vqvae=vqvae)
    config = with_overrides(base, overrides)
    if config.region != base.region:
        raise ConfigError("region settings come from the cache: change them with `prepare --config`")
    if vqvae is not None and config.vqvae != vqvae:
        raise ConfigError("vqvae settings come from the trained VQ-VAE run and cannot change for its prior")
    return config


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


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], AugmentConfig]:
    """Separate a --config file's "augment" section from the model sections."""
    values = dict(overrides or {})
    return values, dataclass_from_json(AugmentConfig, values.pop("augment", {}))


def data_info(cache: SliceCache, pools: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """What a run was trained on: the cache, its volumes, and the validation volumes."""
    files = [v["file"] for v in cache.meta["volumes"]]
    val_ids = np.unique(cache.volume_ids[pools[1]])
    return {
        "cache": str(cache.directory.resolve()),
        "source": cache.meta["source"],
        "volumes": files,
        "val_volumes": [files[i] for i in val_ids],
        "train_slices": len(pools[0]),
        "val_slices": len(pools[1]),
    }


def open_run(run_dir: Path, options: TrainOptions, overrides: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check the run folder against --resume; returns the run.json of a resumed run, else None."""
    checkpoint = run_dir / CHECKPOINT_FILE
    if options.resume:
        if not checkpoint.is_file():
            raise RunError(f"{checkpoint}: nothing to resume")
        if overrides:
            raise ConfigError("a resumed run keeps its config.json: drop --config")
        return read_json(run_dir / RUN_FILE)
    if checkpoint.exists():
        raise RunError(f"{run_dir} holds a run already: pass --resume, or choose a new folder")
    return None


def write_run(
    run_dir: Path, config: ModelConfig | VAEModelConfig, run: dict[str, Any], options: TrainOptions
) -> None:
    """Write a new run's config.json and run.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_FILE)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(run_dir / RUN_FILE, {**run, "options": dataclasses.asdict(options), "started": started})


def resume_split(
    run: dict[str, Any], data: dict[str, Any], run_dir: Path, options: TrainOptions, cluster: Cluster
) -> None:
    """A resumed run must validate on the volumes it started with; run.json then records the new options."""
    if run["data"]["val_volumes"] != data["val_volumes"]:
        raise ConfigError("--val-fraction or --seed changed the validation volumes of the resumed run")
    if cluster.main:
        write_json(run_dir / RUN_FILE, {**run, "options": dataclasses.asdict(options)})


def fit(
    task: Task,
    config: ModelConfig | VAEModelConfig,
    run_dir: Path,
    options: TrainOptions,
    cluster: Cluster,
    pools: tuple[np.ndarray, np.ndarray],
    resumed: dict[str, Any] | None,
) -> torch.nn.Module:
    """Train a task to the end (continuing a resumed run), then wait for every rank before any leaves:
    rank 0 hosts the process group's store, and a rank that exits first can leave the others hanging."""
    trainer = Trainer(task, config, run_dir, options, cluster, pools)
    if resumed is not None:
        trainer.resume()
    model = trainer.fit()
    barrier(cluster)
    return model


def open_slice_run(
    cache_dir: Path, run_dir: Path, options: TrainOptions, overrides: dict[str, Any] | None
) -> tuple[SliceCache, dict[str, Any] | None, dict[str, Any], AugmentConfig]:
    """The cache, the resumed run.json (None for a new run), the model overrides and the augmentation
    (a resumed run keeps its own)."""
    cache = SliceCache.open(cache_dir)
    resumed = open_run(run_dir, options, overrides)
    model_values, augmentation = split_overrides(overrides)
    if resumed is not None:
        augmentation = dataclass_from_json(AugmentConfig, resumed["augment"])
    return cache, resumed, model_values, augmentation


def fit_on_slices(
    task: Task,
    config: Any,
    run_dir: Path,
    cache: SliceCache,
    augmentation: AugmentConfig,
    options: TrainOptions,
    cluster: Cluster,
    resumed: dict[str, Any] | None,
) -> nn.Module:
    """Split the cache by volume, record a new run (or check a resumed one's split), and fit the task."""
    pools = split_by_volume(cache.volume_ids, options.val_fraction, options.seed)
    data = data_info(cache, pools)
    if resumed is not None:
        resume_split(resumed, data, run_dir, options, cluster)
    elif cluster.main:
        run = {"kind": task.kind, "data": data, "augment": dataclasses.asdict(augmentation)}
        write_run(run_dir, config, run, options)
    barrier(cluster)
    return fit(task, config, run_dir, options, cluster, pools, resumed)


SLICE_TASKS = {"vqvae": VQVAETask, "vae": VAETask}  # the models trained on augmented slices


def train_autoencoder(
    family: str,
    cache_dir: Path,
    run_dir: Path,
    options: TrainOptions,
    overrides: dict[str, Any] | None = None,
    beta: float | None = None,
) -> nn.Module:
    """Train (or resume) a VQ-VAE or VAE run on a slice cache; returns the trained model.

    beta: the VAE's KL weight (None: the config's).
    """
    cluster = start_cluster(options.device)
    try:
        run_dir = Path(run_dir)
        cache, resumed, model_values, augmentation = open_slice_run(cache_dir, run_dir, options, overrides)
        if resumed is None:
            beta_values = {"vae": {**model_values.get("vae", {}), "beta": beta}} if beta is not None else {}
            config = run_config(cache, {**model_values, **beta_values}, family)
        else:
            config = load_config(run_dir / CONFIG_FILE)
            if beta is not None and beta != config.vae.beta:
                raise ConfigError(f"a resumed run keeps its beta ({config.vae.beta}): drop --beta")
        torch.manual_seed(options.seed)
        task = SLICE_TASKS[family](config, cache, augmentation, options)
        return fit_on_slices(task, config, run_dir, cache, augmentation, options, cluster, resumed)
    finally:
        stop_cluster(cluster)


@torch.no_grad()
def encode_cache(vqvae: VQVAE, cache: SliceCache, device: torch.device, progress: bool) -> np.ndarray:
    """Code grids of every cached slice, in fp32 as the predictor encodes: (N, h, w) int16."""
    vqvae = vqvae.to(device).eval()
    grids = []
    for s in tqdm(range(0, len(cache), ENCODE_BATCH), desc="encode", unit="batch", disable=not progress):
        slices = torch.from_numpy(cache.slices[s : s + ENCODE_BATCH].astype(np.float32)).to(device)
        position = torch.from_numpy(cache.positions[s : s + ENCODE_BATCH]).to(device)
        grids.append(vqvae.encode(slices, position).cpu().numpy().astype(np.int16))
    return np.concatenate(grids)


def start_prior_run(
    run_dir: Path,
    config: ModelConfig,
    vqvae_run: Path,
    cache: SliceCache,
    options: TrainOptions,
    cluster: Cluster,
) -> dict[str, Any]:
    """Copy the VQ-VAE into a new prior run and encode the cache (main process); returns the VQ-VAE info."""
    state = load_checkpoint(vqvae_run / CHECKPOINT_FILE)
    if state["kind"] != "vqvae":
        raise RunError(f"{vqvae_run}: not a VQ-VAE run")
    vqvae = VQVAE(config.vqvae)
    vqvae.load_state_dict(state["model"])
    check_grid(config, vqvae)
    info = {
        "path": str(vqvae_run.resolve()),
        "step": state["step"],
        "final": final_losses(vqvae_run),
        "options": read_json(vqvae_run / RUN_FILE)["options"],
    }
    if cluster.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        codes = encode_cache(vqvae, cache, cluster.device, options.progress)
        write_atomic(run_dir / CODES_FILE, lambda tmp: np.save(tmp, codes))
        write_atomic(run_dir / VQVAE_FILE, lambda tmp: torch.save(vqvae.state_dict(), tmp))
    return info


def prior_task(
    config: ModelConfig,
    run_dir: Path,
    cache: SliceCache,
    augment: dict[str, Any] | None,
    device: torch.device,
) -> PriorTask:
    """The prior's task: the run's cached codes, or codes of slices augmented with `augment`."""
    if augment is None:
        return PriorTask(config, np.load(run_dir / CODES_FILE), cache.positions)
    vqvae = VQVAE(config.vqvae)
    vqvae.load_state_dict(torch.load(run_dir / VQVAE_FILE, map_location="cpu", weights_only=True))
    return AugmentedPriorTask(config, cache, vqvae, dataclass_from_json(AugmentConfig, augment), device)


def train_prior(
    cache_dir: Path,
    run_dir: Path,
    vqvae_run: Path | None,
    options: TrainOptions,
    overrides: dict[str, Any] | None = None,
    augment_codes: bool = False,
) -> PixelSNAIL:
    """Train (or resume) a prior run on the codes a VQ-VAE run gives the cache; returns the trained prior.

    augment_codes: learn the codes of slices augmented as the --config's "augment" section says (see the
    module docstring); a resumed run keeps its choice.
    """
    cluster = start_cluster(options.device)
    try:
        run_dir = Path(run_dir)
        cache = SliceCache.open(cache_dir)
        resumed = open_run(run_dir, options, overrides)
        pools = split_by_volume(cache.volume_ids, options.val_fraction, options.seed)
        data = data_info(cache, pools)
        if resumed is None:
            if vqvae_run is None:
                raise ConfigError("a new prior run needs --vqvae RUN_DIR_OF_VQVAE")
            vqvae_run = Path(vqvae_run)
            model_values, augmentation = split_overrides(overrides)
            augment = dataclasses.asdict(augmentation) if augment_codes else None
            config = run_config(cache, model_values, vqvae=load_config(vqvae_run / CONFIG_FILE).vqvae)
            vqvae_info = start_prior_run(run_dir, config, vqvae_run, cache, options, cluster)
            if data["val_volumes"] != read_json(vqvae_run / RUN_FILE)["data"]["val_volumes"]:
                log.warning("validation volumes differ from the VQ-VAE run's: its val loss is not held out")
            if cluster.main:
                run = {"kind": "prior", "data": data, "vqvae_run": vqvae_info, "augment": augment}
                write_run(run_dir, config, run, options)
        else:
            config = load_config(run_dir / CONFIG_FILE)
            resume_split(resumed, data, run_dir, options, cluster)
            augment = resumed.get("augment")
        barrier(cluster)
        torch.manual_seed(options.seed)
        task = prior_task(config, run_dir, cache, augment, cluster.device)
        return fit(task, config, run_dir, options, cluster, pools, resumed)
    finally:
        stop_cluster(cluster)
