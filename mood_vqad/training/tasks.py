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
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
    with_overrides,
)
from mood_vqad.errors import ConfigError, RunError
from mood_vqad.inference.weights import CONFIG_FILE, VQVAE_FILE
from mood_vqad.io import read_json, write_atomic
from mood_vqad.nets.pixelsnail import PixelSNAIL
from mood_vqad.nets.vqvae import VQVAE
from mood_vqad.training.augment import AugmentConfig
from mood_vqad.training.cache import SliceCache
from mood_vqad.training.loop import (
    Cluster,
    Task,
    Trainer,
    barrier,
    split_by_volume,
    start_cluster,
    stop_cluster,
)
from mood_vqad.training.runs import (
    CHECKPOINT_FILE,
    CODES_FILE,
    RUN_FILE,
    data_info,
    final_losses,
    load_checkpoint,
    open_run,
    resume_split,
    write_run,
)
from mood_vqad.training.steps import AugmentedPriorTask, PriorTask, VAETask, VQVAETask, check_grid

log = logging.getLogger(__name__)

ENCODE_BATCH = 256  # slices per VQ-VAE pass when encoding the cache for the prior


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


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], AugmentConfig]:
    """Separate a --config file's "augment" section from the model sections."""
    values = dict(overrides or {})
    return values, dataclass_from_json(AugmentConfig, values.pop("augment", {}))


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
        resume_split(resumed, data, run_dir, options, cluster.main)
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
            resume_split(resumed, data, run_dir, options, cluster.main)
            augment = resumed.get("augment")
        barrier(cluster)
        torch.manual_seed(options.seed)
        task = prior_task(config, run_dir, cache, augment, cluster.device)
        return fit(task, config, run_dir, options, cluster, pools, resumed)
    finally:
        stop_cluster(cluster)
