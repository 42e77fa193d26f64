"""Reconstruction L1 of VQ-VAE runs on their own cache, un-augmented: training and held-out volumes apart.

The training log's train loss is on augmented slices and its val loss on a subset; this reads each run's
checkpoint and reconstructs every cached slice as the predictor would (fp32, eval mode), then prints a
Markdown table with the run's speed and code use. The target of issue 13: train <= 0.05, held out <= 0.08.

    PYTHONPATH=. python scripts/reconstruction_l1.py /work/pilots/q0-shipped /work/pilots/q1-x4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mood_vqad.config import load_config
from mood_vqad.inference.weights import CONFIG_FILE
from mood_vqad.nets.vqvae import VQVAE
from mood_vqad.training.cache import SliceCache
from mood_vqad.training.runs import CHECKPOINT_FILE, RUN_FILE, load_checkpoint, read_json

BATCH = 64


@torch.no_grad()
def slice_errors(model: VQVAE, cache: SliceCache) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute error per cached slice (N,) and the codes' usage counts (K,)."""
    errors, counts = [], torch.zeros(model.config.num_codes)
    for start in range(0, len(cache), BATCH):
        x = torch.from_numpy(cache.slices[start : start + BATCH].astype(np.float32))
        position = torch.from_numpy(cache.positions[start : start + BATCH])
        codes = model.encode(x, position)
        counts += torch.bincount(codes.flatten(), minlength=len(counts)).float()
        errors.append((model.decode(codes, position) - x).abs().mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(errors), counts.numpy()


def run_row(run_dir: Path) -> str:
    """One table row: the run's step, L1 on its training and validation volumes, speed and perplexity."""
    run = read_json(run_dir / RUN_FILE)
    cache = SliceCache.open(Path(run["data"]["cache"]))
    model = VQVAE(load_config(run_dir / CONFIG_FILE).vqvae)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    model.load_state_dict(state["model"])
    errors, counts = slice_errors(model.eval(), cache)
    files = [v["file"] for v in cache.meta["volumes"]]
    held_out = np.isin(cache.volume_ids, [files.index(name) for name in run["data"]["val_volumes"]])
    share = counts / counts.sum()
    perplexity = float(np.exp(-(share[share > 0] * np.log(share[share > 0])).sum()))
    entries = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    speeds = [e["steps_per_s"] for e in entries if e["split"] == "train"]
    grid = model.downsampling
    return (
        f"| {run_dir.name} | {state['step']} | {errors[~held_out].mean():.4f} | {errors[held_out].mean():.4f}"
        f" | {np.median(speeds):.2f} | 1/{grid} | {perplexity:.1f} / {model.config.num_codes} |"
    )


def main() -> None:
    """Parse the run folders and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="VQ-VAE run folders")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print("| run | step | L1 train volumes | L1 held out | steps/s (median) | grid | perplexity / codes |")
    print("|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        print(run_row(run_dir))


if __name__ == "__main__":
    main()
