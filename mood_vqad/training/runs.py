"""The run folder: what `train` writes and `calibrate` / `export` read.

RUN/config.json      the run's model config (calibrate writes its thresholds and scales here)
RUN/run.json         kind (vqvae, prior, vae), cache, options, validation volumes; a prior run adds its VQ-VAE
RUN/checkpoint.pt    model, optimizer, scaler and step; loads with torch.load(weights_only=True)
RUN/log.jsonl        one line per logged step and split (train / val) with the losses
RUN/curves.png       the logged curves
RUN/vqvae.pt, RUN/codes.npy   (prior runs) the VQ-VAE's weights and the code grids of the cached slices
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mood_vqad.config import ModelConfig, TrainOptions, VAEModelConfig, load_config, save_config
from mood_vqad.errors import ConfigError, RunError
from mood_vqad.inference.weights import CONFIG_FILE, PRIOR_FILE, VAE_FILE, Modules, build_modules
from mood_vqad.io import read_json, write_atomic, write_json
from mood_vqad.training.cache import SliceCache

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
CURVES_FILE = "curves.png"
CODES_FILE = "codes.npy"
CALIBRATION_FILE = "calibration.json"
CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically, so that a crash while saving keeps the previous one."""
    write_atomic(Path(path), lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU; tensors and plain containers only."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    return state


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """Every entry of a run's log, in order (empty if there is none yet)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(run_dir: Path, step: int) -> None:
    """Drop entries logged after `step`, e.g. past the checkpoint a resumed run restarts from."""
    kept = [entry for entry in read_log(run_dir) if entry["step"] <= step]
    text = "".join(json.dumps(entry) + "\n" for entry in kept)
    write_atomic(Path(run_dir) / LOG_FILE, lambda tmp: tmp.write_text(text))


def append_log(run_dir: Path, entry: dict[str, Any]) -> None:
    """Add one entry to a run's log."""
    with open(Path(run_dir) / LOG_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")


def final_losses(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The last logged train and val entries of a run: {"train": {...}, "val": {...}} (missing if never)."""
    last: dict[str, dict[str, Any]] = {}
    for entry in read_log(run_dir):
        last[entry["split"]] = entry
    return last


def plot_curves(run_dir: Path) -> None:
    """Draw every logged metric against the step, train and val, into curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = read_log(run_dir)
    names = [k for k in dict.fromkeys(k for e in entries for k in e) if k not in ("step", "split", "time")]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for split in ("train", "val"):
            points = [(e["step"], e[name]) for e in entries if e["split"] == split and name in e]
            if points:
                ax.plot(*zip(*points, strict=True), label=split, marker="." if split == "val" else None)
        if name in ("loss", "rec_loss", "commitment"):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(Path(run_dir) / CURVES_FILE, dpi=100)
    plt.close(fig)


def run_kind(run_dir: Path) -> str | None:
    """The kind of a run folder (vqvae, prior or vae), None if it is not one."""
    path = Path(run_dir) / RUN_FILE
    return read_json(path).get("kind") if path.is_file() else None


# The run kinds that hold a whole model, and the file whose weights are the run's checkpoint; a prior
# run's other module (the VQ-VAE) is stored beside it under its weights-folder name.
TRAINED_FILE = {"prior": PRIOR_FILE, "vae": VAE_FILE}


def load_run(run_dir: Path) -> tuple[ModelConfig | VAEModelConfig, Modules]:
    """A prior or VAE run's config and {file: module} (latest checkpoint), in eval mode on the CPU."""
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    if kind not in TRAINED_FILE:
        raise RunError(f"{run_dir}: a {kind} run; a prior run (with its VQ-VAE) or a VAE run holds a model")
    config = load_config(run_dir / CONFIG_FILE)
    modules = build_modules(config)
    for name, module in modules.items():
        if name == TRAINED_FILE[kind]:
            state = load_checkpoint(run_dir / CHECKPOINT_FILE)["model"]
        else:
            state = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    return config, {name: module.eval() for name, module in modules.items()}


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
    run: dict[str, Any], data: dict[str, Any], run_dir: Path, options: TrainOptions, main: bool
) -> None:
    """A resumed run must validate on the volumes it started with; run.json then records the new options."""
    if run["data"]["val_volumes"] != data["val_volumes"]:
        raise ConfigError("--val-fraction or --seed changed the validation volumes of the resumed run")
    if main:
        write_json(run_dir / RUN_FILE, {**run, "options": dataclasses.asdict(options)})
