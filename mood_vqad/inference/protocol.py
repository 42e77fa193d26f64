"""What every detector family offers prediction and calibration, so neither asks which kind it holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from mood_vqad.config import PredictOptions, RegionConfig
from mood_vqad.inference.timing import StageTimer

S = TypeVar("S")


def settings_of(cls: type[S], options: PredictOptions, **derived: Any) -> S:
    """A family's settings dataclass: each field named like an option takes its value, `derived` wins."""
    shared = {f.name: getattr(options, f.name) for f in dataclasses.fields(cls) if hasattr(options, f.name)}
    return cls(**{**shared, **derived})


class Detector(Protocol):
    """One region's detector: a sample score and a pixel map of a volume under settings it derives."""

    region: RegionConfig
    timer: StageTimer

    @classmethod
    def load(cls, directory: Path, device: torch.device) -> Detector:
        """The detector of a weights folder (raises WeightsError)."""
        ...

    def settings_from(self, options: PredictOptions) -> Any:
        """The family's inference settings: the options' values, the region config's where they are None."""
        ...

    def sample_score(self, volume: np.ndarray, settings: Any) -> float:
        """The sample task's score of a volume, in [0, 1)."""
        ...

    def pixel_scores(self, volume: np.ndarray, settings: Any) -> np.ndarray:
        """The pixel task's map in [0, 1), with the volume's exact shape."""
        ...
