"""Restoration: the fast path equals the naive loop draw for draw; nothing changes below threshold."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import covered, phantom, tiny_config, tiny_models

from mood_vqad.config import BRAIN, PredictOptions, PriorConfig
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.restore import (
    RestoreRule,
    batched_nll,
    later_neighbour_unlikely,
    resample_mask,
    restore,
    restore_naive,
    sample_codes,
)
from mood_vqad.inference.scores import change_weights
from mood_vqad.nets.pixelsnail import PixelSNAIL

CONFIG = PriorConfig(
    num_codes=10, grid=(5, 6), channels=16, blocks=2, res_blocks=1, attention_dim=8, dropout=0.0
)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    prior = PixelSNAIL(CONFIG).double().eval()
    generator = torch.Generator().manual_seed(2)
    codes = torch.randint(0, CONFIG.num_codes, (8, *CONFIG.grid), generator=generator)
    position = torch.rand(8, generator=generator, dtype=torch.float64) - 0.5
    uniform = torch.rand(8, codes[0].numel(), generator=generator)
    nll = batched_nll(prior, codes, position, 3)
    return prior, codes, position, uniform, float(nll.quantile(0.7))


@pytest.mark.parametrize("masking", ["dynamic", "static"])
@pytest.mark.parametrize("neighbour", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_fast_restoration_equals_naive_loop(setup, masking, neighbour, temperature):
    prior, codes, position, uniform, threshold = setup
    rule = RestoreRule(threshold, masking, neighbour, temperature)
    naive = restore_naive(prior, codes, position, rule, uniform, batch_size=3)
    fast = restore(prior, codes, position, rule, uniform, batch_size=3)
    assert torch.equal(naive, fast)
    assert (fast != codes).any(), "the threshold should make the test resample something"


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_static_rule_only_touches_the_initial_mask(setup, masking):
    prior, codes, position, uniform, threshold = setup
    rule = RestoreRule(threshold, masking)
    changed = restore(prior, codes, position, rule, uniform, batch_size=8) != codes
    if masking == "static":
        assert not (changed & ~resample_mask(batched_nll(prior, codes, position, 8), rule)).any()


@pytest.mark.parametrize("masking", ["dynamic", "static"])
@pytest.mark.parametrize("neighbour", [False, True])
def test_nothing_changes_when_no_code_is_unlikely(setup, masking, neighbour):
    prior, codes, position, uniform, _ = setup
    rule = RestoreRule(1e9, masking, neighbour)
    assert torch.equal(restore(prior, codes, position, rule, uniform), codes)
    assert torch.equal(restore_naive(prior, codes, position, rule, uniform), codes)


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_restoration_below_threshold_equals_plain_reconstruction(masking):
    config = tiny_config(BRAIN, restore_threshold=1e9, masking=masking)
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    volume = phantom((32, 32, 32))
    settings = detector.settings_from(PredictOptions(restorations=2))
    encoded = detector.encode(volume, settings)
    residual = detector.residuals(encoded, settings)
    with torch.no_grad():
        recon = detector.vqvae.decode(encoded.codes, encoded.position)
    torch.testing.assert_close(residual, (recon - encoded.slices).abs()[:, 0])
    floor = detector.settings_from(PredictOptions(method="vqvae-rec"))
    torch.testing.assert_close(detector.residuals(encoded, floor), residual)
    assert 0.0 <= detector.sample_score(volume, floor) < 1.0


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_detector_restores_exactly_as_the_naive_loop(masking):
    config = tiny_config(BRAIN, restore_threshold=3.0, masking=masking)
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    encoded = detector.encode(phantom((32, 32, 32)), detector.settings_from(PredictOptions(slice_stride=4)))
    settings = detector.settings_from(PredictOptions(restorations=3))
    fast, _ = detector.restorations(encoded, settings)
    naive, _ = detector.restorations(encoded, dataclasses.replace(settings, reference=True))
    assert not torch.equal(fast, encoded.codes.repeat_interleave(3, dim=0))  # some codes were resampled
    assert torch.equal(fast, naive)


def test_unknown_method_is_refused():
    config = tiny_config(BRAIN)
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    with pytest.raises(ValueError, match="vqvae-rec"):
        detector.settings_from(PredictOptions(method="vae"))


def test_neighbour_rule_needs_a_later_unlikely_neighbour():
    unlikely = torch.zeros(1, 3, 3, dtype=torch.bool)
    unlikely[0, 1, 1] = True
    later = later_neighbour_unlikely(unlikely)[0]
    # (1, 1) is a later neighbour of (1, 0) [right] and of (0, 0), (0, 1), (0, 2) [row below].
    expected = np.zeros((3, 3), dtype=bool)
    expected[1, 0] = expected[0, 0] = expected[0, 1] = expected[0, 2] = True
    assert np.array_equal(later.numpy(), expected)
    assert not resample_mask(torch.where(unlikely, 9.0, 0.0), RestoreRule(5.0, neighbour=True)).any()


def test_inverse_cdf_sampling_follows_the_softmax():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(4, 3)
    drawn = sample_codes(logits, torch.tensor([0.1, 0.3, 0.69, 0.99]))
    assert drawn.tolist() == [0, 1, 1, 2]


def test_sampling_temperature_sharpens_the_softmax():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(4, 3)
    uniform = torch.tensor([0.104, 0.106, 0.762, 0.764])
    assert sample_codes(logits, uniform).tolist() == [0, 0, 2, 2]  # cdf 0.2, 0.7, 1
    # at T = 0.5 the probabilities are p^2 / sum p^2 = (0.105, 0.658, 0.237): cdf 0.105, 0.763, 1
    assert sample_codes(logits, uniform, 0.5).tolist() == [0, 1, 1, 2]
    assert sample_codes(logits, uniform, 1e-3).tolist() == [1, 1, 1, 1]  # the mode only
    # the detector draws at its region's temperature: a cold one repeats the mode in every restoration
    config = tiny_config(BRAIN, restore_threshold=0.0, masking="static", sample_temperature=1e-3)
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(restorations=3, slice_stride=8))
    assert settings.rule.temperature == 1e-3
    restored, _ = detector.restorations(detector.encode(phantom((32, 32, 32)), settings), settings)
    grids = restored.view(-1, 3, *restored.shape[1:])  # (S, N, h, w)
    assert (grids == grids[:, :1]).all()


@pytest.mark.parametrize("masking", ["dynamic", "static"])
@pytest.mark.parametrize("floor", [0.0, 0.3])
def test_residual_mask_keeps_the_residual_only_near_changed_codes(masking, floor):
    config = tiny_config(BRAIN, restore_threshold=3.0, masking=masking, mask_sigma=0.5, mask_floor=floor)
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(restorations=3, slice_stride=4))
    encoded = detector.encode(phantom((32, 32, 32)), settings)
    plain = detector.residuals(encoded, settings)
    masked_settings = detector.settings_from(
        PredictOptions(restorations=3, slice_stride=4, residual_mask=True)
    )
    masked = detector.residuals(encoded, masked_settings)
    restored, _ = detector.restorations(encoded, settings)
    codes = restored.view(len(encoded.codes), 3, *restored.shape[1:])  # (S, 3, h, w)
    weights = change_weights(encoded.codes, codes, plain.shape[-1], 0.5)
    assert 0 < (weights == 0).float().mean() < 1
    torch.testing.assert_close(masked, plain * (floor + (1 - floor) * weights))
    with torch.no_grad():
        rec_error = (detector.vqvae.decode(encoded.codes, encoded.position) - encoded.slices).abs()[:, 0]
    never = dataclasses.replace(masked_settings, rule=RestoreRule(1e9, masking))
    torch.testing.assert_close(detector.residuals(encoded, never), floor * rec_error)  # nothing restored
    rec = detector.settings_from(PredictOptions(method="vqvae-rec", residual_mask=True))
    torch.testing.assert_close(detector.residuals(encoded, rec), rec_error)


def test_restore_quantile_raises_the_threshold_to_the_volumes_own_nll():
    config = tiny_config(BRAIN, restore_threshold=0.5, masking="static", restore_quantile=0.9)
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(restorations=2, slice_stride=4))
    encoded = detector.encode(phantom((32, 32, 32)), settings)
    nll = detector.code_nll(encoded, settings)
    rule = detector.volume_rule(nll, settings.rule)
    assert rule.threshold == pytest.approx(float(torch.quantile(nll, 0.9))) and rule.threshold > 0.5
    assert (nll > rule.threshold).float().mean() == pytest.approx(0.1, abs=0.02)
    restored, _ = detector.restorations(encoded, settings)
    changed = (restored.view(len(nll), 2, *nll.shape[1:]) != encoded.codes.unsqueeze(1)).any(1)
    assert changed.any() and not (changed & (nll <= rule.threshold)).any()  # static: only the top 10%
    assert detector.volume_rule(nll, RestoreRule(1e9)).threshold == 1e9  # a quantile never lowers it


def test_restore_quantile_foreground_takes_the_quantile_over_the_codes_that_cover_foreground():
    config = tiny_config(
        BRAIN, restore_threshold=0.0, masking="static", restore_quantile=0.9, restore_quantile_foreground=True
    )
    detector = VQVAEDetector.from_modules(config, tiny_models(config), torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(restorations=2, slice_stride=4))
    volume = phantom((32, 32, 32))
    encoded = detector.encode(volume, settings)
    nll = detector.code_nll(encoded, settings)
    inside = covered(config.region, volume > 0, encoded.indices, config.prior.grid)
    assert inside.any() and not inside.all()  # the phantom's slices hold background codes
    np.testing.assert_array_equal(encoded.inside.numpy(), inside)
    rule = detector.volume_rule(nll, settings.rule, encoded.inside)
    assert rule.threshold == pytest.approx(float(np.quantile(nll.numpy()[inside], 0.9)), rel=1e-5)
    assert rule.threshold != pytest.approx(detector.volume_rule(nll, settings.rule).threshold)
    restored, _ = detector.restorations(encoded, settings)
    changed = (restored.view(len(nll), 2, *nll.shape[1:]) != encoded.codes.unsqueeze(1)).any(1)
    assert changed.any() and not (changed & (nll <= rule.threshold)).any()
    plain = VQVAEDetector.from_modules(tiny_config(BRAIN), tiny_models(config), torch.device("cpu"))
    assert plain.encode(volume, settings).inside is None  # only computed where the rule needs it


def test_mirror_average_is_the_mean_of_the_map_and_the_mirrored_volumes_map_mapped_back():
    config = tiny_config(BRAIN, restore_threshold=0.0, masking="static", mirror_average=True)
    modules = tiny_models(config)
    detector = VQVAEDetector.from_modules(config, modules, torch.device("cpu"))
    single = tiny_config(BRAIN, restore_threshold=0.0, masking="static")
    oracle = VQVAEDetector.from_modules(single, modules, torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(restorations=2, slice_stride=4))
    volume = phantom((32, 32, 32))
    volume[:10] *= 0.5  # no longer left-right symmetric
    plain = oracle.filtered_residuals(volume, settings)
    mirrored = oracle.filtered_residuals(np.ascontiguousarray(volume[::-1]), settings)[::-1]
    assert not np.allclose(plain, mirrored)
    averaged = detector.filtered_residuals(volume, settings)
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-6, atol=1e-7)
    assert averaged.flags.f_contiguous  # written as NIfTI stores voxels, without a copy
    rec = detector.settings_from(PredictOptions(method="vqvae-rec", slice_stride=4))
    single_rec = oracle.filtered_residuals(volume, rec)
    np.testing.assert_array_equal(detector.filtered_residuals(volume, rec), single_rec)


def test_nll_weight_weighs_the_residual_by_the_codes_nll_above_the_volumes_threshold():
    config = tiny_config(BRAIN, restore_threshold=0.0, masking="static", restore_quantile=0.8, nll_weight=0.7)
    modules = tiny_models(config)
    detector = VQVAEDetector.from_modules(config, modules, torch.device("cpu"))
    unweighted = tiny_config(BRAIN, restore_threshold=0.0, masking="static", restore_quantile=0.8)
    oracle = VQVAEDetector.from_modules(unweighted, modules, torch.device("cpu"))
    settings = detector.settings_from(PredictOptions(restorations=2, slice_stride=4))
    encoded = detector.encode(phantom((32, 32, 32)), settings)
    nll = detector.code_nll(encoded, settings)  # (S, h, w)
    threshold = detector.volume_rule(nll, settings.rule).threshold
    plain = oracle.residuals(encoded, settings)  # (S, size, size)
    size, h = plain.shape[-1], nll.shape[1]
    excess = (nll - threshold).clamp_min(0)
    weights = 1 + 0.7 * F.interpolate(excess[:, None], (size, size), mode="bilinear", align_corners=False)
    assert (excess == 0).any() and (excess > 0).any()
    weighted = detector.residuals(encoded, settings)
    torch.testing.assert_close(weighted, plain * weights[:, 0])
    cell = size // h
    # a pixel near the centre of each code cell: (S, h, w)
    centres = (slice(None), slice(cell // 2, None, cell), slice(cell // 2, None, cell))
    # bilinear up-sampling leaves the weight at 1 near the centre of a cell whose neighbours are likely
    low = (excess == 0) & (F.max_pool2d(excess[:, None], 3, 1, 1)[:, 0] == 0)
    torch.testing.assert_close(weighted[centres][low], plain[centres][low])
    rec = detector.settings_from(PredictOptions(method="vqvae-rec", slice_stride=4))
    torch.testing.assert_close(detector.residuals(encoded, rec), oracle.residuals(encoded, rec))
