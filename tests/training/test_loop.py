"""The training loop's parts: split by volume, batch order per rank, prefetching, and two gloo processes."""

import logging
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import phantom, save_nifti, tiny_config

from mood_vqad.config import BRAIN, LR_FLOOR, TrainOptions, to_dict
from mood_vqad.training import loop
from mood_vqad.training.cache import prepare_cache
from mood_vqad.training.loop import BatchOrder, Cluster, amp_dtype, learning_rate, prefetched, split_by_volume
from mood_vqad.training.tasks import train_autoencoder, train_prior

CPU = torch.device("cpu")
TIMEOUT_S = 180


def test_split_keeps_volumes_whole():
    volume_ids = np.repeat(np.arange(10), 7)
    train, val = split_by_volume(volume_ids, 0.2, seed=3)
    assert len(np.intersect1d(volume_ids[train], volume_ids[val])) == 0
    assert len(np.unique(volume_ids[val])) == 2 and len(train) + len(val) == len(volume_ids)
    assert len(split_by_volume(volume_ids, 0.01, seed=3)[1]) == 7, "a positive fraction keeps one volume"
    assert len(split_by_volume(volume_ids, 0.0, seed=3)[1]) == 0


def test_batch_order_shards_each_epoch_without_repeats():
    pool = np.arange(100, 150)
    orders = [BatchOrder(pool, 4, Cluster(rank, 2, CPU), seed=0) for rank in range(2)]
    per_epoch = orders[0].steps_per_epoch
    assert per_epoch == 6
    epoch = np.concatenate([order(step) for order in orders for step in range(per_epoch)])
    assert len(np.unique(epoch)) == len(epoch) == 48 and np.isin(epoch, pool).all()
    assert not np.array_equal(orders[0](0), orders[0](per_epoch)), "each epoch draws a new order"
    assert np.array_equal(BatchOrder(pool, 4, Cluster(0, 2, CPU), seed=0)(7), orders[0](7))
    with pytest.raises(ValueError, match="cannot fill one batch"):
        BatchOrder(pool[:5], 4, Cluster(0, 2, CPU), seed=0)


def test_prefetch_keeps_order_and_raises_loader_errors():
    assert list(prefetched(lambda s: s * s, range(3, 9), depth=2)) == [s * s for s in range(3, 9)]

    def broken(step: int) -> int:
        if step == 2:
            raise OSError("disk gone")
        return step

    with pytest.raises(OSError, match="disk gone"):
        list(prefetched(broken, range(5)))


@pytest.mark.parametrize("bf16_dot", [True, False])
def test_cpu_mixed_precision_auto_only_with_bf16_dot_products(monkeypatch, caplog, bf16_dot):
    monkeypatch.setattr(loop, "cpu_has_bf16_dot", lambda: bf16_dot)
    assert amp_dtype("auto", CPU) == (torch.bfloat16 if bf16_dot else None)
    assert amp_dtype("fp16", CPU) is None and amp_dtype("off", CPU) is None
    with caplog.at_level(logging.WARNING):
        assert amp_dtype("bf16", CPU) == torch.bfloat16
    assert ("far slower" in caplog.text) != bf16_dot


def test_bf16_dot_products_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert loop.cpu_has_bf16_dot(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu sse avx avx2 fma\n")
    assert not loop.cpu_has_bf16_dot(cpuinfo)
    assert not loop.cpu_has_bf16_dot(tmp_path / "missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_ranks(rank: int, ports: tuple[int, int], cache: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    config = to_dict(tiny_config(BRAIN, edge_slices=4))
    # dead_usage above the initial EMA usage of 1 makes every restart step move codes: the broadcast is used.
    options = TrainOptions(
        steps=3, batch_size=4, val_every=2, log_every=1, checkpoint_every=3, restart_every=1, dead_usage=1.5,
        val_fraction=0.25, device="cpu", progress=False,
    )  # fmt: skip
    # One process group per run, as with one torchrun command each; a new port keeps the stores apart.
    os.environ["MASTER_PORT"] = str(ports[0])
    vqvae = train_autoencoder("vqvae", cache, f"{out}/vqvae", options, config)
    os.environ["MASTER_PORT"] = str(ports[1])
    prior = train_prior(cache, f"{out}/prior", f"{out}/vqvae", options, config)
    torch.save({"vqvae": vqvae.state_dict(), "prior": prior.state_dict()}, f"{out}/rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_models(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        save_nifti(data / f"v{i}.nii.gz", phantom((32, 32, 32), seed=i))
    prepare_cache(data, tmp_path / "cache", tiny_config(BRAIN, edge_slices=4).region, progress=False)
    ports = (free_port(), free_port())
    workers = mp.spawn(
        _train_two_ranks, args=(ports, str(tmp_path / "cache"), str(tmp_path)), nprocs=2, join=False
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not workers.join(timeout=1):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail(f"two-process training did not finish in {TIMEOUT_S} s")
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for model in ("vqvae", "prior"):
        for name, value in states[0][model].items():
            assert torch.equal(value, states[1][model][name]), f"{model}.{name} differs between ranks"
    checkpoint = torch.load(tmp_path / "vqvae" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3
    assert torch.equal(checkpoint["model"]["quantizer.codebook"], states[0]["vqvae"]["quantizer.codebook"])


def test_cosine_schedule_falls_from_lr_to_its_floor_as_a_function_of_the_step():
    options = TrainOptions(steps=101, lr=1e-3, lr_schedule="cosine")
    rates = [learning_rate(options, step) for step in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(LR_FLOOR * 1e-3)
    assert rates[50] == pytest.approx(1e-3 * (1 + LR_FLOOR) / 2)
    assert all(a > b for a, b in zip(rates[:-1], rates[1:], strict=True)), "falls at every step"
    constant = TrainOptions(steps=101, lr=1e-3)
    assert {learning_rate(constant, step) for step in range(101)} == {1e-3}
