"""Training speed: optimizer steps per second of the VQ-VAE and the prior, for switches compared in one run.

Runs the real training step (`Trainer.train_step`: loading from the cache array, augmentation, forward,
backward, Adam) on random slices and codes held in memory, and prints a Markdown table. Each variant is a
"+"-joined set of switches on top of the command line's options:

    base      the options as given
    cl        channels-last memory order (TrainOptions.channels_last)
    bf16      bf16 autocast (TrainOptions.amp = "bf16"; on the CPU too)
    compile   torch.compile of the model (not a training option: measured here, with its compile time)
    tN        N CPU threads (TrainOptions.threads)
    bN        batch size N

The variants take turns, `--rounds` times `--steps` steps each, and the table gives each one's median
round, so that a CPU shared with other work slows all of them alike: compare the ratios, not the speeds.
`--profile` adds a second table: where a step's time goes (load, augmentation, forward, backward, Adam,
dead-code restarts), per variant, from timers around the step's parts.

    PYTHONPATH=. python scripts/benchmark_training.py --config weights/brain/config.json --batch-size 16 \\
        --variants base cl bf16 bf16+cl t1 --profile
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mood_vqad.config import REGIONS, ModelConfig, TrainOptions, model_defaults, with_overrides
from mood_vqad.training.augment import AugmentConfig
from mood_vqad.training.cache import SliceCache
from mood_vqad.training.loop import Cluster, Trainer, start_cluster
from mood_vqad.training.steps import PriorTask, VQVAETask
from mood_vqad.training.tasks import split_overrides

PARTS = ("load", "augment", "forward", "backward", "adam", "restart")


@dataclasses.dataclass
class Variant:
    """One set of switches: the options it trains with, and whether the model is compiled."""

    name: str
    options: TrainOptions
    compile: bool


def parse_variant(name: str, base: TrainOptions) -> Variant:
    """A variant from its "+"-joined switches (see the module docstring); raises ValueError."""
    changes: dict = {}
    compiled = False
    for switch in name.split("+"):
        if switch == "cl":
            changes["channels_last"] = True
        elif switch == "bf16":
            changes["amp"] = "bf16"
        elif switch == "compile":
            compiled = True
        elif switch[:1] in "tb" and switch[1:].isdigit():
            changes["threads" if switch[0] == "t" else "batch_size"] = int(switch[1:])
        elif switch != "base":
            raise ValueError(f"unknown switch {switch!r} in variant {name!r}")
    return Variant(name, dataclasses.replace(base, **changes), compiled)


def random_data(config: ModelConfig, n: int) -> tuple[SliceCache, np.ndarray]:
    """An in-memory cache of n random slices and n random code grids."""
    rng = np.random.default_rng(0)
    size = config.region.slice_size
    slices = rng.standard_normal((n, 1, size, size)).astype(np.float16)
    positions = rng.uniform(-0.5, 0.5, n).astype(np.float32)
    codes = rng.integers(0, config.prior.num_codes, (n, *config.prior.grid)).astype(np.int16)
    cache = SliceCache(Path(tempfile.mkdtemp()), {}, slices, positions, np.zeros(n, dtype=np.int32))
    return cache, codes


def make_trainer(
    kind: str,
    variant: Variant,
    config: ModelConfig,
    data: tuple,
    augmentation: AugmentConfig,
    cluster: Cluster,
) -> tuple[Trainer, float]:
    """A trainer of one model for a variant, and the seconds its first step took (compilation included)."""
    cache, codes = data
    torch.manual_seed(0)
    if kind == "vqvae":
        task = VQVAETask(config, cache, augmentation, variant.options)
    else:
        task = PriorTask(config, codes, cache.positions)
    pools = (np.arange(len(codes)), np.arange(0))
    trainer = Trainer(task, config, cache.directory, variant.options, cluster, pools)
    if variant.compile:
        trainer.replica = torch.compile(trainer.model)
    start = time.perf_counter()
    run_steps(trainer, 1)
    return trainer, time.perf_counter() - start


def run_steps(trainer: Trainer, steps: int) -> float:
    """Seconds for `steps` training steps, continuing the trainer's own step count."""
    torch.set_num_threads(trainer.options.threads or os.cpu_count() or 1)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(trainer.task.load(trainer.train_order(trainer.step)))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def profile_step(trainer: Trainer, steps: int) -> dict[str, float]:
    """Mean seconds per part of a training step, the parts run one after the other as train_step runs them."""
    task, totals = trainer.task, dict.fromkeys(PARTS, 0.0)
    torch.set_num_threads(trainer.options.threads or os.cpu_count() or 1)
    for _ in range(steps):
        times = [time.perf_counter()]
        batch = task.load(trainer.train_order(trainer.step))
        times.append(time.perf_counter())
        inputs = trainer.prepare(batch, train=True)
        times.append(time.perf_counter())
        with trainer.autocast():
            out = task.losses(trainer.replica, inputs)
        times.append(time.perf_counter())
        trainer.optimizer.zero_grad(set_to_none=True)
        out[task.metrics[0]].backward()
        times.append(time.perf_counter())
        trainer.optimizer.step()
        times.append(time.perf_counter())
        if task.kind == "vqvae":  # as if every step were a restart step (they come every restart_every)
            task.model.quantizer.restart_dead_codes(out["latents"].detach(), trainer.options.dead_usage)
        times.append(time.perf_counter())
        trainer.step += 1
        for part, t0, t1 in zip(PARTS, times[:-1], times[1:], strict=True):
            totals[part] += (t1 - t0) / steps
    return totals


def load_average() -> str:
    """The 1-minute load average, to say how shared the CPU was."""
    return f"{os.getloadavg()[0]:.1f}"


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--region", choices=REGIONS, default="brain")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model, variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each variant takes")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    parser.add_argument(
        "--variants", nargs="+", default=["base"], help="see above; the first is the reference"
    )
    parser.add_argument("--models", nargs="+", choices=["vqvae", "prior"], default=["vqvae", "prior"])
    parser.add_argument("--profile", action="store_true", help="also time the parts of a step")
    parser.add_argument(
        "--config", default=None, help="JSON file of model sizes (a weights or run folder's config.json)"
    )
    return parser.parse_args()


def main() -> None:
    """Parse arguments, time every model and variant in turns, print the tables."""
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    sizes = json.loads(Path(args.config).read_text()) if args.config else {}
    overrides, augmentation = split_overrides(sizes)
    config = with_overrides(model_defaults(args.region), overrides)
    base = TrainOptions(batch_size=args.batch_size, device=args.device, amp=args.amp, progress=False)
    variants = [parse_variant(name, base) for name in args.variants]
    cluster = start_cluster(args.device)
    largest = max(v.options.batch_size for v in variants)
    data = random_data(config, largest * (1 + args.warmup + args.rounds * args.steps * 2 + 4))
    loads = [load_average()]
    rows, parts = [], []
    for kind in args.models:
        trainers = [make_trainer(kind, v, config, data, augmentation, cluster) for v in variants]
        for trainer, _ in trainers:
            run_steps(trainer, args.warmup)
        rounds = [[run_steps(t, args.steps) / args.steps for t, _ in trainers] for _ in range(args.rounds)]
        for i, (variant, (trainer, first)) in enumerate(zip(variants, trainers, strict=True)):
            seconds = statistics.median(r[i] for r in rounds)
            reference = statistics.median(r[0] for r in rounds)
            params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
            rows.append((kind, variant, params, seconds, reference / seconds, first))
        if args.profile:
            parts += [
                (kind, v.name, profile_step(t, args.steps))
                for v, (t, _) in zip(variants, trainers, strict=True)
            ]
        loads.append(load_average())
    print(
        f"device {cluster.device}, {os.cpu_count()} CPUs, load average {' -> '.join(loads)},"
        f" {args.region}, {args.config or 'default sizes'}, torch {torch.__version__}"
    )
    columns = ("model", "variant", "parameters (M)", "batch", "steps/s", "s/step", "examples/s", "speed-up")
    print("| " + " | ".join((*columns, "first step (s)")) + " |\n" + "|---" * (len(columns) + 1) + "|")
    for kind, variant, params, seconds, speedup, first in rows:
        batch = variant.options.batch_size
        print(
            f"| {kind} | {variant.name} | {params:.2f} | {batch} | {1 / seconds:.2f} | {seconds:.3f}"
            f" | {batch / seconds:.1f} | {speedup:.2f}x | {first:.1f} |"
        )
    if parts:
        print("\n| model | variant | " + " | ".join(f"{p} (ms)" for p in PARTS) + " |")
        print("|---|---|" + "---|" * len(PARTS))
        for kind, name, totals in parts:
            total = sum(totals.values())
            shares = " | ".join(f"{1000 * totals[p]:.0f} ({100 * totals[p] / total:.0f}%)" for p in PARTS)
            print(f"| {kind} | {name} | {shares} |")


if __name__ == "__main__":
    main()
