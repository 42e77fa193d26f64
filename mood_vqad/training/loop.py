"""The training loop shared by the VQ-VAE and the PixelSNAIL prior, for one process or many.

Adam, mixed precision on a GPU, a validation split by volume, a JSONL log with its curves, and checkpoints
that resume exactly: the batch order depends only on (seed, epoch) and every step reseeds the RNGs from
(seed, step, rank), so a resumed run draws what an uninterrupted one would without storing generator
states. Launched by torchrun, each process trains a DistributedDataParallel replica on its own share of
every global batch (NCCL on GPUs, gloo on CPUs). The models' own steps are in `train`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mood_vqad.config import LR_FLOOR, ModelConfig, TrainOptions, to_dict
from mood_vqad.predict import resolve_device
from mood_vqad.training.runs import (
    CHECKPOINT_FILE,
    append_log,
    load_checkpoint,
    plot_curves,
    save_checkpoint,
    truncate_log,
)

log = logging.getLogger(__name__)

PREFETCH = 4  # batches read ahead of the accelerator


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training processes."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder."""
        return self.rank == 0


def start_cluster(device_name: str) -> Cluster:
    """This process's rank and device; joins the process group when torchrun started several."""
    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Cluster(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # Rank 0 encodes the whole cache for the prior while the others wait: allow a long barrier.
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(hours=2))
    return Cluster(dist.get_rank(), world, device)


def stop_cluster(cluster: Cluster) -> None:
    """Leave the process group, if this process joined one."""
    if cluster.world > 1:
        dist.destroy_process_group()


def barrier(cluster: Cluster) -> None:
    """Wait for every process (no-op alone)."""
    if cluster.world > 1:
        dist.barrier(device_ids=[cluster.device.index] if cluster.device.type == "cuda" else None)


def sum_over_ranks(values: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """Element-wise sum of a tensor over all processes (itself alone)."""
    if cluster.world > 1:
        dist.all_reduce(values)
    return values


def cpu_has_bf16_dot(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bf16 dot-product instructions (avx512_bf16 or AMX), where bf16 autocast pays."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:  # not Linux: stay with fp32, which is never slow
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the requested precision; None (fp32) when off.

    On the CPU, bf16 pays only with bf16 dot products (VQ-VAE steps 2.26x faster with avx512_bf16) and
    costs without them (12x slower on an AVX2-only EPYC): "auto" takes it only where the CPU has them,
    an explicit "bf16" takes it anyway, with a warning. fp16 is never used on the CPU.
    """
    if device.type != "cuda":
        native = cpu_has_bf16_dot()
        if name == "bf16" and not native:
            log.warning("--amp bf16 on a CPU without avx512_bf16 or AMX: emulated, far slower than fp32")
        return torch.bfloat16 if name == "bf16" or (name == "auto" and native) else None
    if name == "off":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def step_seed(seed: int, step: int, rank: int) -> int:
    """An independent RNG seed per (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def split_by_volume(volume_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice indices of training and validation volumes; at least one volume on each side when possible."""
    volumes = np.unique(volume_ids)
    n_val = int(round(fraction * len(volumes)))
    if fraction > 0 and len(volumes) > 1:
        n_val = min(max(n_val, 1), len(volumes) - 1)
    held_out = np.random.default_rng(seed).permutation(volumes)[:n_val]
    is_val = np.isin(volume_ids, held_out)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class BatchOrder:
    """Which slices a process reads at a step: every epoch a new permutation, drawn from (seed, epoch)."""

    def __init__(self, pool: np.ndarray, batch_size: int, cluster: Cluster, seed: int):
        self.pool, self.batch_size, self.cluster, self.seed = pool, batch_size, cluster, seed
        self.steps_per_epoch = len(pool) // (batch_size * cluster.world)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(pool)} training slices cannot fill one batch of {batch_size} per process"
                f" x {cluster.world} processes"
            )
        self._epoch, self._order = -1, pool

    def __call__(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.pool)
        start = (k * self.cluster.world + self.cluster.rank) * self.batch_size
        # Sorted, so that reads from the memory-mapped cache go forwards through the file.
        return np.sort(self._order[start : start + self.batch_size])


def prefetched(load: Callable[[int], Any], steps: range, depth: int = PREFETCH) -> Iterator[Any]:
    """load(step) for each step, computed up to `depth` steps ahead in a background thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        for step in steps:
            if stop.is_set():
                return
            try:
                ready.put((load(step), None))
            except Exception as exc:  # handed to the training thread, which raises it
                ready.put((None, exc))
                return

    threading.Thread(target=work, daemon=True).start()
    try:
        for _ in steps:
            item, error = ready.get()
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # frees a blocked put so the thread sees `stop`
            while True:
                ready.get_nowait()


class Task(Protocol):
    """What the loop needs from one model's training."""

    kind: str
    metrics: tuple[str, ...]  # averaged and logged; the first is the loss that is minimised
    model: nn.Module

    def load(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """A batch of cached examples, on the CPU."""

    def inputs(self, batch: tuple[torch.Tensor, ...], train: bool) -> tuple[torch.Tensor, ...]:
        """Network inputs of a batch on the device (augmented when training), outside autocast."""

    def losses(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Forward pass: every metric of `metrics`, plus whatever after_step and usage need."""

    def after_step(self, done: int, out: dict[str, torch.Tensor]) -> None:
        """Work after the optimizer step `done` (1-based), on every process."""

    def usage(self, out: dict[str, torch.Tensor], cluster: Cluster) -> dict[str, float]:
        """Extra values to log at a logging step, from the step's outputs."""


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Move a batch's tensors to the device; pinned host memory makes the copy asynchronous."""
    return tuple(t.to(device, non_blocking=True) for t in batch)


def channels_last(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The 4D tensors of a batch in channels-last memory order (what oneDNN's fast convolutions take)."""
    return tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in inputs)


def pin(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Page-locked copies of a CPU batch when it is bound for a GPU."""
    return tuple(t.pin_memory() for t in batch) if device.type == "cuda" else batch


def learning_rate(options: TrainOptions, step: int) -> float:
    """The learning rate of step `step` (0-based): a function of the step, so resuming needs no state."""
    if options.lr_schedule == "constant":
        return options.lr
    progress = min(step / max(options.steps - 1, 1), 1.0)
    return options.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainer:
    """Runs a task's optimisation for a run folder: steps, logging, validation and checkpoints."""

    def __init__(
        self,
        task: Task,
        config: ModelConfig,
        run_dir: Path,
        options: TrainOptions,
        cluster: Cluster,
        pools: tuple[np.ndarray, np.ndarray],
    ):
        self.task, self.config, self.run_dir, self.options, self.cluster = (
            task,
            config,
            run_dir,
            options,
            cluster,
        )
        self.device = cluster.device
        if options.threads:
            torch.set_num_threads(options.threads)
        self.amp = amp_dtype(options.amp, self.device)
        self.model = task.model.to(self.device)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the same shape
        self.replica: nn.Module = self.model
        if cluster.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.replica = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=options.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.train_order = BatchOrder(pools[0], options.batch_size, cluster, options.seed)
        # A fixed validation subset, each process taking every world-th slice of it.
        val = np.random.default_rng(options.seed).permutation(pools[1])
        val = np.sort(val[: options.val_batches * options.batch_size * cluster.world])[
            cluster.rank :: cluster.world
        ]
        self.val_batches = [val[s : s + options.batch_size] for s in range(0, len(val), options.batch_size)]
        self.has_val = len(pools[1]) > 0 and options.val_every > 0
        self.step = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision where configured, else nothing."""
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def resume(self) -> None:
        """Restore model, optimizer, scaler and step from the run's checkpoint."""
        state = load_checkpoint(self.run_dir / CHECKPOINT_FILE)
        if state["kind"] != self.task.kind:
            raise ValueError(f"{self.run_dir}: checkpoint of a {state['kind']} run, not {self.task.kind}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        if self.cluster.main:
            truncate_log(self.run_dir, self.step)
        log.info("resuming %s training at step %d", self.task.kind, self.step)

    def checkpoint(self) -> None:
        """Write the checkpoint and redraw the curves (main process)."""
        if not self.cluster.main:
            return
        state = {
            "kind": self.task.kind,
            "step": self.step,
            "config": to_dict(self.config),
            "options": asdict(self.options),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        save_checkpoint(self.run_dir / CHECKPOINT_FILE, state)
        plot_curves(self.run_dir)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics averaged over the fixed validation subset, un-augmented, in eval mode."""
        self.model.eval()
        sums = torch.zeros(len(self.task.metrics) + 1, device=self.device)
        for indices in self.val_batches:
            inputs = self.prepare(self.task.load(indices), train=False)
            with self.autocast():
                out = self.task.losses(self.model, inputs)
            values = torch.stack([out[name].detach().float() for name in self.task.metrics])
            sums += torch.cat([values * len(indices), values.new_tensor([len(indices)])])
        sums = sum_over_ranks(sums, self.cluster)
        self.model.train()
        return {name: float(sums[i] / sums[-1]) for i, name in enumerate(self.task.metrics)}

    def record(self, split: str, values: dict[str, float], started: float) -> None:
        """Append one log entry (main process)."""
        if self.cluster.main:
            append_log(
                self.run_dir, {"step": self.step, "split": split, **values, "time": time.time() - started}
            )

    def prepare(self, batch: tuple[torch.Tensor, ...], train: bool) -> tuple[torch.Tensor, ...]:
        """A loaded batch as network inputs on the device, in the model's memory order."""
        inputs = self.task.inputs(to_device(batch, self.device), train=train)
        return channels_last(inputs) if self.options.channels_last else inputs

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch from task.load; returns the forward pass's outputs."""
        torch.manual_seed(step_seed(self.options.seed, self.step, self.cluster.rank))
        inputs = self.prepare(batch, train=True)
        with self.autocast():
            out = self.task.losses(self.replica, inputs)
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.options, self.step)
        self.scaler.scale(out[self.task.metrics[0]]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.task.after_step(self.step, out)
        return out

    def fit(self) -> nn.Module:
        """Train up to options.steps; returns the (unwrapped) model."""
        options, task = self.options, self.task
        if self.step >= options.steps:
            log.info("%s run already at step %d of %d", task.kind, self.step, options.steps)
            return self.model
        steps = range(self.step, options.steps)
        batches = prefetched(lambda s: pin(task.load(self.train_order(s)), self.device), steps)
        running = torch.zeros(len(task.metrics), device=self.device)
        count, started, interval = 0, time.time(), time.time()
        shown: dict[str, str] = {}
        bar = tqdm(
            total=options.steps,
            initial=self.step,
            desc=task.kind,
            disable=not (options.progress and self.cluster.main),
        )
        self.model.train()
        for batch in batches:
            out = self.train_step(batch)
            running += torch.stack([out[name].detach().float() for name in task.metrics])
            count += 1
            bar.update(1)
            last = self.step == options.steps
            if self.step % options.log_every == 0 or last:
                means = sum_over_ranks(running / count, self.cluster) / self.cluster.world
                values = {name: float(v) for name, v in zip(task.metrics, means, strict=True)}
                speed = count / (time.time() - interval)
                self.record(
                    "train", {**values, **task.usage(out, self.cluster), "steps_per_s": speed}, started
                )
                shown["loss"] = f"{values[task.metrics[0]]:.4g}"
                bar.set_postfix(shown)
                running.zero_()
                count, interval = 0, time.time()
            if self.has_val and (self.step % options.val_every == 0 or last):
                values = self.validate()
                self.record("val", values, started)
                shown["val"] = f"{values[task.metrics[0]]:.4g}"
                bar.set_postfix(shown)
            if self.step % options.checkpoint_every == 0 or last:
                self.checkpoint()
        bar.close()
        return self.model
