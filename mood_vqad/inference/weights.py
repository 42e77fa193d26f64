"""The weights folder: per region a config.json, two state dicts and their sha256 sums.

Layout: WEIGHTS/<region>/{config.json, vqvae.pt, prior.pt, SHA256SUMS}; the VAE baseline of a region
lives beside it in WEIGHTS/<region>-vae/{config.json, vae.pt, SHA256SUMS}. State dicts hold tensors only
and load with `torch.load(weights_only=True)`: nothing is unpickled but tensors.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from mood_vqad.config import ModelConfig, VAEModelConfig, load_config, load_vae_config, save_config
from mood_vqad.io import UserError
from mood_vqad.nets.pixelsnail import PixelSNAIL
from mood_vqad.nets.vae import VAE
from mood_vqad.nets.vqvae import VQVAE

CONFIG_FILE = "config.json"
VQVAE_FILE = "vqvae.pt"
PRIOR_FILE = "prior.pt"
VAE_FILE = "vae.pt"
SUMS_FILE = "SHA256SUMS"


class WeightsError(UserError):
    """Weights that are missing, corrupt or do not match their config; the message is one line."""


def default_weights_dir() -> Path:
    """$MOOD_VQAD_WEIGHTS, else the repository's weights/ folder."""
    return Path(os.environ.get("MOOD_VQAD_WEIGHTS", Path(__file__).resolve().parents[2] / "weights"))


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state(module: torch.nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    if half:
        # The quantiser's buffers decide nearest codes: keep them exact, halve only the weights.
        halve = [k for k, v in state.items() if v.is_floating_point() and "quantizer" not in k]
        state.update({k: state[k].half() for k in halve})
    return state


def save_weights(
    directory: Path, config: ModelConfig, vqvae: VQVAE, prior: PixelSNAIL, half: bool = False
) -> None:
    """Write one region's config, state dicts (fp16 storage when half) and SHA256SUMS."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(config, directory / CONFIG_FILE)
    torch.save(_state(vqvae, half), directory / VQVAE_FILE)
    torch.save(_state(prior, half), directory / PRIOR_FILE)
    _write_sums(directory)


def _write_sums(directory: Path, names: tuple[str, ...] = (CONFIG_FILE, VQVAE_FILE, PRIOR_FILE)) -> None:
    sums = "".join(f"{sha256(directory / name)}  {name}\n" for name in names)
    (directory / SUMS_FILE).write_text(sums)


def update_config(directory: Path, config: ModelConfig | VAEModelConfig) -> None:
    """Replace a weights folder's config.json (e.g. calibrated values) and its SHA256SUMS."""
    save_config(config, Path(directory) / CONFIG_FILE)
    vae = isinstance(config, VAEModelConfig)
    _write_sums(Path(directory), (CONFIG_FILE, VAE_FILE) if vae else (CONFIG_FILE, VQVAE_FILE, PRIOR_FILE))


def _check_sums(directory: Path) -> None:
    sums = directory / SUMS_FILE
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        if not (directory / name).is_file():
            raise WeightsError(f"{directory / name}: missing (listed in {SUMS_FILE})")
        if sha256(directory / name) != expected:
            raise WeightsError(f"{directory / name}: sha256 does not match {SUMS_FILE} (corrupt or replaced)")


def _load_state(module: torch.nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable ({type(exc).__name__})") from exc
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or wrong:
        example = (missing + unexpected + wrong)[0]
        raise WeightsError(
            f"{path}: does not match {CONFIG_FILE} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors, e.g. {example})"
        )
    module.load_state_dict(state)


def load_weights(
    directory: Path, device: torch.device | str = "cpu"
) -> tuple[ModelConfig, VQVAE, PixelSNAIL]:
    """Rebuild one region's models from its folder, in eval mode on device; raises WeightsError."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise WeightsError(f"{directory}: no {CONFIG_FILE} (no weights for this region)")
    _check_sums(directory)
    try:
        config = load_config(directory / CONFIG_FILE)
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{directory / CONFIG_FILE}: invalid ({exc})") from exc
    vqvae, prior = VQVAE(config.vqvae), PixelSNAIL(config.prior)
    for module, name in ((vqvae, VQVAE_FILE), (prior, PRIOR_FILE)):
        if not (directory / name).is_file():
            raise WeightsError(f"{directory / name}: missing")
        _load_state(module, directory / name)
    return config, vqvae.to(device).eval(), prior.to(device).eval()


def vae_weights_dir(weights_dir: Path, region: str) -> Path:
    """Where a region's VAE baseline lives in a weights folder: WEIGHTS/<region>-vae."""
    return Path(weights_dir) / f"{region}-vae"


def save_vae_weights(directory: Path, config: VAEModelConfig, vae: VAE, half: bool = False) -> None:
    """Write a VAE baseline's config, state dict (fp16 storage when half) and SHA256SUMS."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(config, directory / CONFIG_FILE)
    torch.save(_state(vae, half), directory / VAE_FILE)
    _write_sums(directory, (CONFIG_FILE, VAE_FILE))


def load_vae_weights(directory: Path, device: torch.device | str = "cpu") -> tuple[VAEModelConfig, VAE]:
    """Rebuild a VAE baseline from its folder, in eval mode on device; raises WeightsError."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise WeightsError(f"{directory}: no {CONFIG_FILE} (no VAE weights for this region)")
    _check_sums(directory)
    try:
        config = load_vae_config(directory / CONFIG_FILE)
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{directory / CONFIG_FILE}: invalid ({exc})") from exc
    vae = VAE(config.vae)
    if not (directory / VAE_FILE).is_file():
        raise WeightsError(f"{directory / VAE_FILE}: missing")
    _load_state(vae, directory / VAE_FILE)
    return config, vae.float().to(device).eval()
