"""The slice cache: every training slice of a folder of volumes, preprocessed once into one array file.

Reading and resampling NIfTI volumes dominates a naive training loop (the authors report 20 h per model
against 2.5 h once slices were pre-extracted). `prepare_cache` runs the predictor's own preprocessing
(`preprocess.normalise`, `slice_indices`, `extract_slices`) on every volume once and stores the slices
in a memory-mappable .npy file, so the training loop only indexes an array.

Cache layout: slices.npy (N, 1, S, S) float16, positions.npy (N,) float32, volume_ids.npy (N,) int32,
cache.json (region config, volumes with their slice ranges, skipped files).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mood_vqad.config import ModelConfig, RegionConfig, with_overrides
from mood_vqad.inference.slicing import extract_slices, normalise, slice_indices, slice_positions
from mood_vqad.io import CaseError, list_cases, load_volume

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
META_FILE = "cache.json"
SLICES_FILE = "slices.npy"
POSITIONS_FILE = "positions.npy"
VOLUME_IDS_FILE = "volume_ids.npy"
SLICE_DTYPE = np.float16  # z-scores and [-1, 1] intensities lose nothing that matters at 3 digits
COPY_CHUNK = 4096  # slices copied at a time from the staging file


def training_indices(volume: np.ndarray, region: RegionConfig) -> np.ndarray:
    """Every slice the predictor could score (stride 1), minus region.edge_slices at each end."""
    indices = slice_indices(volume, region, stride=1)
    n_slices = volume.shape[region.slice_axis]
    return indices[(indices >= region.edge_slices) & (indices < n_slices - region.edge_slices)]


def volume_slices(path: Path, region: RegionConfig) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """One volume's training slices (n, 1, S, S) float16, their positions (n,) and the volume's shape.

    Raises CaseError for a file that cannot be read as a 3D volume.
    """
    volume, _ = load_volume(path)
    indices = training_indices(volume, region)
    slices = extract_slices(normalise(volume, region), region, indices).numpy().astype(SLICE_DTYPE)
    positions = slice_positions(indices, volume.shape[region.slice_axis]).numpy()
    return slices, positions, volume.shape


def _read(args: tuple[Path, RegionConfig]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]] | str:
    # A failure comes back as its cause, not raised, so that one bad file does not end the pool's map
    # (and CaseError does not survive pickling between processes).
    try:
        return volume_slices(*args)
    except CaseError as exc:
        return exc.cause


def _read_all(cases: list[Path], region: RegionConfig, workers: int) -> Iterator:
    """Each case's slices, or the cause of its failure, in order; `workers` processes read them."""
    jobs = [(case, region) for case in cases]
    if workers <= 1:
        yield from map(_read, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield from pool.map(_read, jobs)


def prepare_cache(
    data_dir: Path, cache_dir: Path, region: RegionConfig, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Preprocess every volume of data_dir into cache_dir; returns the cache's metadata.

    Bad files are logged in one line each and skipped. Raises CaseError if the folder is unusable or no
    volume gives a slice.
    """
    cases = list_cases(Path(data_dir))
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".{SLICES_FILE}.staging"
    volumes: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    positions: list[np.ndarray] = []
    # The slice count is only known after reading every volume: stage raw rows, then copy into the .npy.
    total = 0
    try:
        with open(staging, "wb") as raw:
            results = _read_all(cases, region, workers)
            for case, result in tqdm(
                zip(cases, results, strict=True), total=len(cases), desc="prepare", disable=not progress
            ):
                if isinstance(result, str):
                    log.error("%s: %s (skipped)", case.name, result)
                    skipped.append({"file": case.name, "error": result})
                    continue
                slices, pos, volume_shape = result
                entry = {"id": len(volumes), "file": case.name, "shape": list(volume_shape), "first": total}
                volumes.append({**entry, "slices": len(pos)})
                raw.write(slices.tobytes())
                positions.append(pos)
                total += len(pos)
        if total == 0:
            raise CaseError(data_dir, "no volume gave a training slice")
        shape = (total, 1, region.slice_size, region.slice_size)
        staged = np.memmap(staging, dtype=SLICE_DTYPE, mode="r", shape=shape)
        out = np.lib.format.open_memmap(cache_dir / SLICES_FILE, mode="w+", dtype=SLICE_DTYPE, shape=shape)
        for s in range(0, total, COPY_CHUNK):
            out[s : s + COPY_CHUNK] = staged[s : s + COPY_CHUNK]
        out.flush()
        del out, staged
    finally:
        staging.unlink(missing_ok=True)
    volume_ids = np.concatenate([np.full(v["slices"], v["id"], dtype=np.int32) for v in volumes])
    np.save(cache_dir / POSITIONS_FILE, np.concatenate(positions).astype(np.float32))
    np.save(cache_dir / VOLUME_IDS_FILE, volume_ids)
    meta = {
        "format": CACHE_FORMAT,
        "source": str(Path(data_dir).resolve()),
        "region": dataclasses.asdict(region),
        "slices": total,
        "dtype": np.dtype(SLICE_DTYPE).name,
        "volumes": volumes,
        "skipped": skipped,
    }
    (cache_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("%d slices of %d volumes in %s (%d files skipped)", total, len(volumes), cache_dir, len(skipped))
    return meta


@dataclass
class SliceCache:
    """An opened cache: slices stay memory-mapped on disk; positions and volume ids are small."""

    directory: Path
    meta: dict[str, Any]
    slices: np.ndarray  # (N, 1, S, S) float16, memory-mapped
    positions: np.ndarray  # (N,) float32
    volume_ids: np.ndarray  # (N,) int32

    @classmethod
    def open(cls, directory: Path) -> SliceCache:
        """Open a cache written by `prepare_cache` (raises FileNotFoundError or ValueError)."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{directory}: cache format {meta.get('format')!r}, expected {CACHE_FORMAT}")
        slices = np.load(directory / SLICES_FILE, mmap_mode="r")
        return cls(
            directory, meta, slices, np.load(directory / POSITIONS_FILE), np.load(directory / VOLUME_IDS_FILE)
        )

    @property
    def region(self) -> RegionConfig:
        """The region config the slices were made with."""
        return with_overrides(ModelConfig(), {"region": self.meta["region"]}).region

    def __len__(self) -> int:
        return len(self.positions)


def default_workers() -> int:
    """Processes reading volumes at once: the usable CPUs, at most 4 (a 512^3 volume needs 1 GiB twice)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))
