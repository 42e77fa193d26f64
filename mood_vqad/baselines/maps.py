"""Per-slice anomaly maps of a trained VAE: the localisation predictors compared by Zhou et al. 2020.

Zhou, Deng & Wu 2020 ("Unsupervised anomaly localization using VAE and beta-VAE") compare the predictors
of Zimmerer et al. 2019 (reconstruction error, |gradient of the ELBO|, |gradient of the KL| and their
combination) and Dehaene et al. 2020 (energy-based projection). Every map is computed on a batch of
slices with the network frozen and x requiring grad; the latent is the posterior mean, so maps are
deterministic. The loss terms are those the VAE trained on: L(x) = rec(x, x_hat) + beta * KL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mood_vqad.config import ENERGY_ALPHA, ENERGY_LAMBDA, ENERGY_STEPS
from mood_vqad.nets.vae import VAE

log = logging.getLogger(__name__)


@contextmanager
def frozen(model: VAE) -> Iterator[VAE]:
    """The model in eval mode with its parameters out of autograd; restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def input_gradient(model: VAE, x: torch.Tensor, position: torch.Tensor, term: str) -> torch.Tensor:
    """d term / dx for each slice (terms are per slice, so the sum's gradient is each slice's own).

    Args:
        term: "loss" (the negative ELBO), "rec" or "kl".
    Returns:
        (S, 1, H, W), the shape of x.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = model.terms(x, position, sample=False)
        (grad,) = torch.autograd.grad(out[term].sum(), x)
    return grad


@torch.no_grad()
def rec_map(model: VAE, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """|x - x_hat|: (S, 1, H, W) -> (S, H, W)."""
    return (x - model.terms(x, position, sample=False)["recon"]).abs()[:, 0]


def elbo_grad_map(model: VAE, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """|dL/dx| with L the negative ELBO: (S, 1, H, W) -> (S, H, W)."""
    return input_gradient(model, x, position, "loss").abs()[:, 0]


def kl_grad_map(model: VAE, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """|dKL/dx|: (S, 1, H, W) -> (S, H, W)."""
    return input_gradient(model, x, position, "kl").abs()[:, 0]


def combi_map(model: VAE, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """(x - x_hat)^2 * |dKL/dx|: (S, 1, H, W) -> (S, H, W)."""
    with torch.no_grad():
        squared = (x - model.terms(x, position, sample=False)["recon"]).pow(2)
    return (squared * input_gradient(model, x, position, "kl").abs())[:, 0]


def energy(
    model: VAE, x: torch.Tensor, x0: torch.Tensor, position: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """E(x) = L(x) + lambda * ||x - x0||_1 per slice (S,), and the reconstruction f(x) (S, 1, H, W)."""
    out = model.terms(x, position, sample=False)
    return out["loss"] + lam * (x - x0).abs().flatten(1).sum(1), out["recon"]


def energy_projection(
    model: VAE,
    x0: torch.Tensor,
    position: torch.Tensor,
    alpha: float,
    lam: float,
    steps: int,
    trace: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Dehaene et al. 2020: x_{t+1} = x_t - alpha * grad_x E(x_t) * (x_t - f(x_t))^2, from x_0 = the input.

    The gradient and the reconstruction f(x_t) are recomputed at every step, at the current x_t.
    Args:
        x0: (S, 1, H, W) input slices; position: (S,).
        trace: if given, receives E(x_t) (S,) for t = 0 .. steps.
    Returns:
        x_T, (S, 1, H, W).
    """
    x = x0.detach().clone()
    for step in range(steps + 1):
        with torch.enable_grad():
            x.requires_grad_(True)
            e, recon = energy(model, x, x0, position, lam)  # (S,), (S, 1, H, W)
            (grad,) = torch.autograd.grad(e.sum(), x) if step < steps else (None,)
        if trace is not None:
            trace.append(e.detach())
        if step == steps:
            break
        with torch.no_grad():
            x = x.detach() - alpha * grad * (x.detach() - recon).pow(2)
    return x.detach()


def energy_map(
    model: VAE, x: torch.Tensor, position: torch.Tensor, alpha: float, lam: float, steps: int
) -> torch.Tensor:
    """|x_0 - x_T| after the energy-based projection: (S, 1, H, W) -> (S, H, W).

    The update grows with the cube of the residual, so a step size too large for the intensities diverges:
    non-finite values are then set to 0 with a warning.
    """
    moved = (x - energy_projection(model, x, position, alpha, lam, steps)).abs()[:, 0]
    finite = torch.isfinite(moved)
    if not finite.all():
        log.warning(
            "energy projection diverged on %d pixels (set to 0): lower --energy-alpha", int((~finite).sum())
        )
        moved = torch.where(finite, moved, torch.zeros_like(moved))
    return moved


def slice_map(
    model: VAE,
    predictor: str,
    x: torch.Tensor,
    position: torch.Tensor,
    batch_size: int,
    energy_options: tuple[float, float, int] = (ENERGY_ALPHA, ENERGY_LAMBDA, ENERGY_STEPS),
) -> torch.Tensor:
    """One predictor's maps over many slices, batch_size at a time: (S, 1, H, W) -> (S, H, W) float32.

    Args:
        predictor: rec, elbo-grad, kl-grad, combi or energy.
        energy_options: (alpha, lambda, steps) of the energy projection.
    """
    single = {
        "rec": rec_map,
        "elbo-grad": elbo_grad_map,
        "kl-grad": kl_grad_map,
        "combi": combi_map,
        "energy": lambda m, xs, ps: energy_map(m, xs, ps, *energy_options),
    }
    if predictor not in single:
        raise ValueError(f"unknown VAE predictor {predictor!r}")
    with frozen(model):
        chunks = range(0, len(x), batch_size)
        maps = [single[predictor](model, x[s : s + batch_size], position[s : s + batch_size]) for s in chunks]
    return torch.cat(maps).float() if maps else x.new_zeros(0, *x.shape[-2:])


@torch.no_grad()
def slice_elbo(model: VAE, x: torch.Tensor, position: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The negative ELBO of each slice (posterior mean latent): (S, 1, H, W) -> (S,)."""
    with frozen(model):
        chunks = range(0, len(x), batch_size)
        out = [
            model.terms(x[s : s + batch_size], position[s : s + batch_size], False)["loss"] for s in chunks
        ]
    return torch.cat(out) if out else x.new_zeros(0)
