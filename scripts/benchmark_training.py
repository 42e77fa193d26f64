"""Training speed: optimizer steps per second of the VQ-VAE and the prior at a region's default sizes.

Runs the real training step (`Trainer.train_step`: loading from the cache array, augmentation, forward,
backward, Adam) on random slices and codes held in memory, and prints a Markdown table.

    PYTHONPATH=. python scripts/benchmark_training.py --region brain --batch-size 8 --steps 10
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mood_vqad.config import REGIONS, TrainOptions, model_defaults, with_overrides
from mood_vqad.training.augment import AugmentConfig
from mood_vqad.training.cache import SliceCache
from mood_vqad.training.loop import Trainer, start_cluster
from mood_vqad.training.steps import PriorTask, VQVAETask


def time_steps(trainer: Trainer, steps: int, warmup: int) -> float:
    """Steps per second over `steps` training steps, after `warmup` untimed ones."""
    for step in range(warmup):
        trainer.train_step(trainer.task.load(trainer.train_order(step)))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.train_step(trainer.task.load(trainer.train_order(step)))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    """Parse arguments, time both models, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--region", choices=REGIONS, default="brain")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    parser.add_argument("--config", default=None, help="JSON file overriding the region's model sizes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    overrides = json.loads(Path(args.config).read_text()) if args.config else {}
    config = with_overrides(model_defaults(args.region), overrides)
    options = TrainOptions(batch_size=args.batch_size, device=args.device, amp=args.amp, progress=False)
    cluster = start_cluster(args.device)
    n = args.batch_size * (args.steps + args.warmup)
    rng = np.random.default_rng(0)
    size, grid = config.region.slice_size, config.prior.grid
    slices = rng.standard_normal((n, 1, size, size)).astype(np.float16)
    positions = rng.uniform(-0.5, 0.5, n).astype(np.float32)
    codes = rng.integers(0, config.prior.num_codes, (n, *grid)).astype(np.int16)
    pools = (np.arange(n), np.arange(0))
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        cache = SliceCache(Path(run_dir), {}, slices, positions, np.zeros(n, dtype=np.int32))
        torch.manual_seed(0)
        for task in (VQVAETask(config, cache, AugmentConfig(), options), PriorTask(config, codes, positions)):
            trainer = Trainer(task, config, Path(run_dir), options, cluster, pools)
            speed = time_steps(trainer, args.steps, args.warmup)
            params = sum(p.numel() for p in task.model.parameters()) / 1e6
            rows.append((task.kind, params, speed))
    threads = torch.get_num_threads()
    sizes = args.config or "default sizes"
    print(f"device {cluster.device}, {threads} threads, amp {trainer.amp}, {args.region}, {sizes}")
    print("| model | parameters (M) | batch | steps/s | s/step | examples/s |")
    print("|---|---|---|---|---|---|")
    for kind, params, speed in rows:
        examples = speed * args.batch_size
        print(
            f"| {kind} | {params:.2f} | {args.batch_size} | {speed:.2f} | {1 / speed:.3f} | {examples:.1f} |"
        )


if __name__ == "__main__":
    main()
