"""Shared fixtures: tiny randomly initialised models saved in the real weights format."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_config, tiny_models

from mood_vqad.config import ABDOM, BRAIN
from mood_vqad.inference.weights import save_weights


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with tiny random brain and abdomen models, written by save_weights."""
    root = tmp_path_factory.mktemp("weights")
    for i, region in enumerate((BRAIN, ABDOM)):
        config = tiny_config(region)
        save_weights(root / region.name, config, tiny_models(config, seed=i))
    return root
