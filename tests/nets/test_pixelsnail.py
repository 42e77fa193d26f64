"""The prior's contracts: strict raster causality (attention included), row cropping, NLL shape."""

import torch

from mood_vqad.config import PriorConfig
from mood_vqad.nets.pixelsnail import PixelSNAIL, _attention_mask

CONFIG = PriorConfig(
    num_codes=12, grid=(6, 5), channels=16, blocks=2, res_blocks=2, attention_dim=8, dropout=0.0
)


def make_prior(seed: int = 0) -> PixelSNAIL:
    torch.manual_seed(seed)
    return PixelSNAIL(CONFIG).double().eval()


def inputs(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(0, CONFIG.num_codes, (batch, *CONFIG.grid), generator=generator)
    return codes, torch.rand(batch, generator=generator, dtype=torch.float64) - 0.5


def test_changing_a_code_changes_no_logit_at_or_before_it():
    prior, (codes, position) = make_prior(), inputs()
    h, w = CONFIG.grid
    base = prior(codes, position)
    for p in range(h * w):
        changed = codes.clone()
        changed[:, p // w, p % w] = (changed[:, p // w, p % w] + 1) % CONFIG.num_codes
        delta = (prior(changed, position) - base).abs().amax(dim=(0, 1)).flatten()  # (H*W,)
        assert delta[: p + 1].max() == 0, f"logits at or before position {p} depend on code {p}"
        if p < h * w - 1:
            assert delta[p + 1 :].max() > 0, "a code should influence some later logit"


def test_gradient_of_each_logit_reaches_only_earlier_codes():
    """The same contract through gradients of the input embeddings, attention path included."""
    prior, (codes, position) = make_prior(seed=3), inputs(batch=1)
    h, w = CONFIG.grid
    embedded = prior.embedding(codes).detach().requires_grad_(True)  # (1, H, W, C)
    prior.embedding.forward = lambda _codes: embedded  # feed the differentiable embeddings in
    logits = prior(codes, position)  # (1, K, H, W)
    for p in range(h * w):
        (grad,) = torch.autograd.grad(logits[0, :, p // w, p % w].sum(), embedded, retain_graph=True)
        reach = grad.abs().sum(-1).flatten()  # (H*W,)
        assert reach[p:].max() == 0, f"logit {p} depends on codes at or after {p}"


def test_attention_sees_only_cells_in_the_past():
    mask = _attention_mask(4, 4, torch.device("cpu"))  # (16, 4)
    assert not mask[:5].any()  # position 5 = (1, 1) is the first cell's last position
    assert mask[5, 0] and not mask[5, 1:].any()
    assert mask[7, :2].all() and not mask[7, 2:].any()
    assert mask[15].all()


def test_first_rows_alone_give_the_same_logits():
    prior, (codes, position) = make_prior(), inputs()
    full = prior(codes, position)
    for rows in range(1, CONFIG.grid[0] + 1):
        torch.testing.assert_close(prior(codes[:, :rows], position), full[:, :, :rows], rtol=0, atol=1e-12)


def test_nll_is_per_code_and_positive():
    prior, (codes, position) = make_prior(), inputs()
    nll = prior.nll(codes, position)
    assert nll.shape == codes.shape and (nll > 0).all()
