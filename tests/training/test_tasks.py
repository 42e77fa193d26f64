"""Training end to end through the command line: prepare, train both models, calibrate, export, predict.

Also: resuming gives bit-identical models and optimizer states to an uninterrupted run.
"""

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import cli_flags, phantom, run_cli, save_nifti, tiny_config

from mood_vqad.cli import main
from mood_vqad.config import BRAIN, LR_FLOOR, TrainOptions, load_config, to_dict
from mood_vqad.inference.weights import load_weights
from mood_vqad.training.augment import AugmentConfig
from mood_vqad.training.export import _config_line
from mood_vqad.training.loop import learning_rate
from mood_vqad.training.tasks import train_autoencoder, train_prior

SHAPE = (32, 32, 32)
STEPS = 4
# The flags of every training run here; --dead-usage above the initial EMA usage makes restarts happen,
# and --restart-until stops them after the first logged step. fp32 everywhere (--amp auto would take
# bf16 on a CPU with bf16 dot products), so the bf16 test below has an fp32 reference on any machine.
FLAGS = {
    "amp": "off",
    "batch_size": 8,
    "val_fraction": 0.25,
    "val_every": 2,
    "log_every": 2,
    "checkpoint_every": 2,
}
VQVAE_FLAGS = {"restart_every": 2, "dead_usage": 1.5, "restart_until": 2}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    for folder, seeds in (("data", range(4)), ("holdout", (10, 11))):
        (root / folder).mkdir()
        for seed in seeds:
            save_nifti(root / folder / f"v{seed}.nii.gz", phantom(SHAPE, seed=seed))
    (root / "data" / "broken.nii.gz").write_bytes(b"\x1f\x8b truncated")
    config = to_dict(tiny_config(BRAIN, edge_slices=4))
    (root / "tiny.json").write_text(json.dumps(config))
    common = ["--config", root / "tiny.json", "--steps", str(STEPS), *cli_flags(FLAGS)]
    steps = {
        "prepare": (
            "prepare",
            root / "data",
            root / "cache",
            "--region",
            "brain",
            "--config",
            root / "tiny.json",
        ),
        "vqvae": ("train", "vqvae", root / "cache", root / "vqvae", *common, *cli_flags(VQVAE_FLAGS)),
        "prior": ("train", "prior", root / "cache", root / "prior", "--vqvae", root / "vqvae", *common),
        "calibrate": ("calibrate", root / "prior", root / "holdout", "--device", "cpu"),
        "export": ("export", root / "prior", root / "weights", "--notes", root / "notes.md"),
        "sample": ("predict", "sample", root / "holdout", root / "sample", "--weights", root / "weights"),
        "pixel": ("predict", "pixel", root / "holdout", root / "pixel", "--weights", root / "weights"),
    }
    (root / "sample").mkdir()
    (root / "pixel").mkdir()
    (root / "notes.md").write_text("Phantoms, not anatomy.\n")
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        # One thread per process: tiny models gain nothing from more, and spinning threads on a busy
        # machine slow everything down.
        patch.setenv("OMP_NUM_THREADS", "1")
        for name, args in steps.items():
            results[name] = run_cli(*args)
            assert results[name].returncode == 0, f"{name}: {results[name].stderr}"
    return {"root": root, "results": results, "config": config}


def test_prepare_reports_a_bad_volume_in_one_line_and_skips_it(pipeline):
    errors = [line for line in pipeline["results"]["prepare"].stderr.splitlines() if "ERROR" in line]
    assert (
        len(errors) == 1
        and "broken.nii.gz: unreadable NIfTI" in errors[0]
        and errors[0].endswith("(skipped)")
    )
    meta = json.loads((pipeline["root"] / "cache" / "cache.json").read_text())
    assert [v["file"] for v in meta["volumes"]] == [f"v{i}.nii.gz" for i in range(4)]


@pytest.mark.parametrize("model", ["vqvae", "prior"])
def test_runs_log_both_splits_draw_curves_and_save_plain_checkpoints(pipeline, model):
    run = pipeline["root"] / model
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == STEPS and checkpoint["kind"] == model
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(e["step"], e["split"]) for e in entries] == [(2, "train"), (2, "val"), (4, "train"), (4, "val")]
    assert all(np.isfinite(e["loss"]) for e in entries)
    if model == "vqvae":
        assert {"perplexity", "dead_codes", "restarted"} <= set(entries[0])
        first, last = [e for e in entries if e["split"] == "train"]
        # dead codes remain at the last step, but restarts ended at step 2
        assert first["restarted"] > 0 and last["restarted"] == 0 and last["dead_codes"] > 0
    assert (run / "curves.png").stat().st_size > 0
    val_volumes = json.loads((run / "run.json").read_text())["data"]["val_volumes"]
    assert len(val_volumes) == 1


def test_calibration_sets_thresholds_and_scales(pipeline):
    config = load_config(pipeline["root"] / "prior" / "config.json")
    calibration = json.loads((pipeline["root"] / "prior" / "calibration.json").read_text())
    assert calibration["values"]["sample_threshold"] == config.region.sample_threshold
    assert config.region.sample_threshold >= config.region.restore_threshold > 0
    assert config.region.sample_scale > 0 and config.region.pixel_scale > 0
    assert config.region != tiny_config(BRAIN, edge_slices=4).region


def test_export_writes_the_predictors_folder_and_a_model_card(pipeline):
    folder = pipeline["root"] / "weights" / "brain"
    config, _ = load_weights(folder)
    assert config == load_config(pipeline["root"] / "prior" / "config.json")
    card = (folder / "MODEL_CARD.md").read_text()
    assert "v0.nii.gz" in card and f"{STEPS} steps" in card and "sample_threshold" in card
    assert "mood-vqad train prior" in card
    rule = json.loads((pipeline["root"] / "prior" / "calibration.json").read_text())["restore_rule"]
    assert f"mood-vqad calibrate PRIOR_RUN HOLDOUT_DIR --restore-rule {rule}" in card
    assert "--lr-schedule" not in card  # options left at their defaults are not repeated
    assert "adds no new subjects" in card and "elastic_prob" in card
    assert card.count("CONFIG.json: this folder's config.json (model sizes and region settings).") == 1
    # the VQ-VAE's reconstruction curve: one row per validation (steps 2 and 4), train and held-out L1
    curve = [line for line in card.splitlines() if line.startswith(("| 2 |", f"| {STEPS} |"))]
    assert len(curve) == 2 and all(len(line.split("|")) == 5 for line in curve)
    assert card.rstrip().endswith("## Notes\n\nPhantoms, not anatomy.")


def test_model_card_carries_the_augmentation_the_runs_changed(pipeline, tmp_path):
    """Weights configs hold no "augment" section, so the card's CONFIG.json line adds the changed keys,
    and `prepare` takes that same file."""
    # run.json records every key, its tuples as JSON lists
    recorded = json.loads(json.dumps({**dataclasses.asdict(AugmentConfig()), "rotation": 7.0}))
    assert _config_line(recorded, tmp_path).endswith(
        'plus the runs\' augmentation: `"augment": {"rotation": 7.0}`.'
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**pipeline["config"], "augment": {"rotation": 7.0}}))
    done = run_cli(
        "prepare", pipeline["root"] / "holdout", tmp_path / "cache", "--region", "brain", "--config", config
    )
    assert done.returncode == 0, done.stderr


def test_predict_with_exported_weights(pipeline):
    root = pipeline["root"]
    for name in ("v10.nii.gz", "v11.nii.gz"):
        assert 0 <= float((root / "sample" / f"{name}.txt").read_text()) < 1
        scores = np.asarray(nib.load(str(root / "pixel" / name)).dataobj)
        assert scores.shape == SHAPE and np.isfinite(scores).all()


@pytest.fixture
def one_thread():
    """The pipeline's runs used one thread; float sums are only bit-identical in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("model", ["vqvae", "prior"])
def test_resume_matches_an_uninterrupted_run(pipeline, tmp_path, model, one_thread):
    root = pipeline["root"]
    flags = {**FLAGS, **(VQVAE_FLAGS if model == "vqvae" else {})}

    def train(steps: int, resume: bool) -> None:
        options = TrainOptions(steps=steps, resume=resume, progress=False, device="cpu", **flags)
        overrides = None if resume else pipeline["config"]
        if model == "vqvae":
            train_autoencoder("vqvae", root / "cache", tmp_path, options, overrides)
        else:
            train_prior(root / "cache", tmp_path, root / "vqvae", options, overrides)

    train(STEPS // 2, resume=False)
    half = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    train(STEPS, resume=True)
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    whole = torch.load(root / model / "checkpoint.pt", weights_only=True)
    assert half["step"] == STEPS // 2 and resumed["step"] == whole["step"] == STEPS
    for name, value in whole["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for index, state in whole["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], value), (index, key)
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [
        2,
        2,
        4,
        4,
    ]


def test_bf16_channels_last_cpu_training_resumes_exactly(pipeline, tmp_path, one_thread):
    """The CPU's fast path (bf16 autocast, channels-last) keeps resume bit-exact and the loss finite."""
    root = pipeline["root"]
    flags = {**FLAGS, **VQVAE_FLAGS, "amp": "bf16", "channels_last": True, "device": "cpu", "progress": False}

    def train(run, steps: int, resume: bool) -> dict:
        options = TrainOptions(steps=steps, resume=resume, **flags)
        train_autoencoder("vqvae", root / "cache", run, options, None if resume else pipeline["config"])
        return torch.load(run / "checkpoint.pt", weights_only=True)["model"]

    train(tmp_path / "a", STEPS // 2, resume=False)
    resumed = train(tmp_path / "a", STEPS, resume=True)
    whole = train(tmp_path / "b", STEPS, resume=False)
    assert all(torch.equal(resumed[name], value) for name, value in whole.items())
    logged = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(entry["loss"]) for entry in logged)
    reference = torch.load(root / "vqvae" / "checkpoint.pt", weights_only=True)["model"]
    assert not all(torch.equal(reference[name], value) for name, value in whole.items()), "bf16 was not used"


def test_cosine_schedule_sets_each_steps_rate_and_is_recorded(pipeline, tmp_path, one_thread):
    options = TrainOptions(steps=STEPS, lr=1e-3, lr_schedule="cosine", progress=False, device="cpu", **FLAGS)
    train_prior(pipeline["root"] / "cache", tmp_path, pipeline["root"] / "vqvae", options, pipeline["config"])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["options"]["lr_schedule"] == "cosine"
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(learning_rate(options, STEPS - 1))
    assert learning_rate(options, STEPS - 1) == pytest.approx(LR_FLOOR * 1e-3)


def test_prior_on_augmented_codes_records_its_choice_and_resumes_exactly(pipeline, tmp_path, one_thread):
    root = pipeline["root"]

    def train(run, steps: int, resume: bool) -> dict:
        options = TrainOptions(steps=steps, resume=resume, progress=False, device="cpu", **FLAGS)
        overrides = None if resume else pipeline["config"]
        train_prior(root / "cache", run, root / "vqvae", options, overrides, augment_codes=True)
        return torch.load(run / "checkpoint.pt", weights_only=True)["model"]

    train(tmp_path / "a", STEPS // 2, resume=False)
    resumed = train(tmp_path / "a", STEPS, resume=True)
    whole = train(tmp_path / "b", STEPS, resume=False)
    assert all(torch.equal(resumed[name], value) for name, value in whole.items())
    plain = torch.load(root / "prior" / "checkpoint.pt", weights_only=True)["model"]
    assert not all(torch.equal(plain[name], value) for name, value in whole.items())
    assert json.loads((tmp_path / "a" / "run.json").read_text())["augment"]["elastic_prob"] == 0.5
    assert json.loads((root / "prior" / "run.json").read_text())["augment"] is None


def test_an_existing_run_is_not_overwritten_without_resume(pipeline):
    result = run_cli("train", "vqvae", pipeline["root"] / "cache", pipeline["root"] / "vqvae", "--steps", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ERROR:") and "pass --resume" in result.stderr


def test_help_of_the_new_commands_shows_defaults(capsys):
    for command in (["prepare"], ["train", "vqvae"], ["train", "prior"], ["calibrate"], ["export"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "-h"])
        assert exit_info.value.code == 0 and "(default:" in capsys.readouterr().out, command
    with pytest.raises(SystemExit):
        main(["calibrate", "-h"])
    assert "(default: 98.0)" in capsys.readouterr().out


def test_train_config_must_agree_with_the_cache(pipeline, tmp_path):
    other = {**pipeline["config"], "region": {**pipeline["config"]["region"], "slice_size": 64}}
    with pytest.raises(ValueError, match="region settings come from the cache"):
        train_autoencoder(
            "vqvae", pipeline["root"] / "cache", tmp_path, TrainOptions(device="cpu", progress=False), other
        )
