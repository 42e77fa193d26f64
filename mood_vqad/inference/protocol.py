"""What every detector family offers prediction and calibration, so neither asks which kind it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mood_vqad.config import PredictOptions, RegionConfig
from mood_vqad.inference.timing import StageTimer


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
