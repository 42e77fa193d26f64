"""The weights folder: per region a config.json, the family's state dicts and their sha256 sums.

Layout: WEIGHTS/<region>/{config.json, vqvae.pt, prior.pt, SHA256SUMS}; the VAE baseline of a region
lives beside it in WEIGHTS/<region>-vae/{config.json, vae.pt, SHA256SUMS}. Both families go through one
saver and one loader over {file: module}. State dicts hold tensors only and load with
`torch.load(weights_only=True)`: nothing is unpickled but tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mood_vqad.config import ModelConfig, VAEModelConfig, load_config, save_config
from mood_vqad.errors import WeightsError
from mood_vqad.io import sha256
from mood_vqad.nets.pixelsnail import PixelSNAIL
from mood_vqad.nets.vae import VAE
from mood_vqad.nets.vqvae import VQVAE

CONFIG_FILE = "config.json"
VQVAE_FILE = "vqvae.pt"
PRIOR_FILE = "prior.pt"
VAE_FILE = "vae.pt"
SUMS_FILE = "SHA256SUMS"

Modules = dict[str, torch.nn.Module]  # {state dict file name: module}


def default_weights_dir() -> Path:
    """$MOOD_VQAD_WEIGHTS, else the repository's weights/ folder."""
    return Path(os.environ.get("MOOD_VQAD_WEIGHTS", Path(__file__).resolve().parents[2] / "weights"))


def build_modules(config: ModelConfig | VAEModelConfig) -> Modules:
    """The untrained networks of a model config, keyed by the file each one's state dict goes to."""
    if isinstance(config, VAEModelConfig):
        return {VAE_FILE: VAE(config.vae)}
    return {VQVAE_FILE: VQVAE(config.vqvae), PRIOR_FILE: PixelSNAIL(config.prior)}


def _state(module: torch.nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    if half:
        # The quantiser's buffers decide nearest codes: keep them exact, halve only the weights.
        halve = [k for k, v in state.items() if v.is_floating_point() and "quantizer" not in k]
        state.update({k: state[k].half() for k in halve})
    return state


def save_weights(
    directory: Path, config: ModelConfig | VAEModelConfig, modules: Modules, half: bool = False
) -> None:
    """Write a config, one state dict per {file: module} (fp16 storage when half) and SHA256SUMS."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(config, directory / CONFIG_FILE)
    for name, module in modules.items():
        torch.save(_state(module, half), directory / name)
    _write_sums(directory, (CONFIG_FILE, *modules))


def _write_sums(directory: Path, names: tuple[str, ...]) -> None:
    sums = "".join(f"{sha256(directory / name)}  {name}\n" for name in names)
    (directory / SUMS_FILE).write_text(sums)


def update_config(directory: Path, config: ModelConfig | VAEModelConfig) -> None:
    """Replace a weights folder's config.json (e.g. calibrated values) and its SHA256SUMS."""
    save_config(config, Path(directory) / CONFIG_FILE)
    _write_sums(Path(directory), (CONFIG_FILE, *build_modules(config)))


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
    if not path.is_file():
        raise WeightsError(f"{path}: missing")
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


def read_weights_config(directory: Path) -> ModelConfig | VAEModelConfig:
    """A weights folder's config.json, either family (raises WeightsError when it is invalid)."""
    path = Path(directory) / CONFIG_FILE
    try:
        return load_config(path)
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: invalid ({exc})") from exc


def load_weights(
    directory: Path, device: torch.device | str = "cpu"
) -> tuple[ModelConfig | VAEModelConfig, Modules]:
    """A weights folder's config and {file: module}, fp32 in eval mode on device (raises WeightsError)."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise WeightsError(f"{directory}: no {CONFIG_FILE} (no weights for this region)")
    _check_sums(directory)
    config = read_weights_config(directory)
    modules = build_modules(config)
    for name, module in modules.items():
        _load_state(module, directory / name)
    return config, {name: module.to(device).eval() for name, module in modules.items()}
