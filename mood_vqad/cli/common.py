"""What several sub-commands share: options built from parsed arguments, the VAE's flags, --config files.

Nothing here imports torch: building the parser and reporting argument errors stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mood_vqad.checks import non_negative_float, non_negative_int, positive_float, positive_int
from mood_vqad.config import VAE_PREDICTORS, PredictOptions
from mood_vqad.errors import ConfigError

DEVICES = ["auto", "cpu", "cuda"]
DEFAULTS = PredictOptions()


def add_command(
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A sub-command run by func(args), its help func's docstring; -h shows every default."""
    text = func.__doc__.strip().rstrip(".")
    help = text[0].lower() + text[1:]
    p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.set_defaults(func=func)
    return p


def on_off(value: str) -> bool:
    """argparse type of an on / off switch."""
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'on' nor 'off'")
    return value == "on"


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The options object every detector reads: each parsed argument named like one of its fields."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(PredictOptions) if hasattr(args, f.name)
    }
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return PredictOptions(**{**values, "progress": not args.no_progress})


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    """The options of `predict` and `calibrate` that decide how volumes are scored."""
    p.add_argument("--device", choices=DEVICES, default=DEFAULTS.device, help="auto: GPU if visible")
    p.add_argument(
        "--batch-size", type=positive_int, default=DEFAULTS.batch_size, help="maps per prior / decoder batch"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=DEFAULTS.seed, help="restoration draws and voxel sampling"
    )
    p.add_argument(
        "--energy-steps",
        type=positive_int,
        default=DEFAULTS.energy_steps,
        help="vae-energy: projection steps",
    )
    p.add_argument(
        "--energy-alpha", type=positive_float, default=DEFAULTS.energy_alpha, help="vae-energy: step size"
    )
    p.add_argument(
        "--energy-lambda",
        type=non_negative_float,
        default=DEFAULTS.energy_lambda,
        help="vae-energy: weight of ||x - x0||_1",
    )


def add_ensemble_option(p: argparse.ArgumentParser) -> None:
    """vae-ensemble's members (`predict` only)."""
    p.add_argument(
        "--ensemble",
        dest="members",
        nargs="+",
        choices=VAE_PREDICTORS,
        default=list(DEFAULTS.members),
        help="vae-ensemble: the predictors whose normalised maps are averaged",
    )


def read_overrides(path: str | None) -> dict[str, Any]:
    """The sections of a --config JSON file (empty without one)."""
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable config file ({exc})") from exc
