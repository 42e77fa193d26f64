"""Folder evaluation against sklearn on the concatenation the challenge's scorer builds, and the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mood_vqad.evaluation import evaluate as evaluate_module
from mood_vqad.evaluation.evaluate import evaluate_folder, format_table, to_json
from mood_vqad.evaluation.figures import choose_slices
from mood_vqad.io import CaseError

REPO = Path(__file__).resolve().parents[1]
SHAPE = (12, 10, 9)


def save(path: Path, data: np.ndarray, slope: float | None = None) -> None:
    image = nib.Nifti1Image(data, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, str(path))


def challenge_pixel(pred_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One case read as scripts/evalresults.py reads it (process_file_pixelwise)."""
    label = np.clip(np.rint(nib.load(label_path).get_fdata()).astype(int), 0, 1) == 1
    try:
        pred = nib.load(pred_path).get_fdata(dtype=np.float16)
        if pred.shape != label.shape:
            raise ValueError("shape")
        pred = np.clip(pred, 0.0, 1.0)
    except Exception:
        pred = np.zeros(label.shape)
    return pred.ravel(), label.ravel()


def challenge_ap(pred_dir: Path, label_dir: Path, names: list[str]) -> tuple[float, float]:
    """sklearn's AP and AUROC on the concatenation of the named cases."""
    pairs = [challenge_pixel(pred_dir / name, label_dir / name) for name in names]
    preds = np.concatenate([p for p, _ in pairs])
    labels = np.concatenate([lab for _, lab in pairs])
    return average_precision_score(labels, preds), roc_auc_score(labels, preds)


@pytest.fixture
def pixel_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """Eight small cases: predictions stored in different ways, one missing, mis-shaped or truncated."""
    rng = np.random.default_rng(0)
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "toy_label" / "pixel"
    pred_dir.mkdir()
    label_dir.mkdir(parents=True)
    types = {}
    kinds = ["float32", "float64", "scaled_int16", "missing", "misshaped", "truncated", "normal", "float32"]
    for i, kind in enumerate(kinds):
        name = f"toy_{i}.nii.gz"
        label = np.zeros(SHAPE, dtype=np.float32)
        if kind != "normal":
            corner = rng.integers(0, 5, size=3)
            label[tuple(slice(c, c + 4) for c in corner)] = 1.0
            label[label == 0] = rng.choice([0.0, 0.4, 0.5], size=int((label == 0).sum()))  # rint to 0
        types[name] = [] if kind == "normal" else [["sink", "noise_blob"], ["reflected_patch"]][i % 2]
        save(label_dir / name, label)
        # Few levels, out-of-range values, and offsets that only tie once cast to float16.
        pred = rng.choice([-0.1, 0.0, 0.2, 0.5, 0.5 + 1e-5, 0.9, 1.3], size=SHAPE) + 0.4 * (label >= 1)
        if kind in ("float32", "truncated", "normal"):
            save(pred_dir / name, pred.astype(np.float32))
        elif kind == "float64":
            save(pred_dir / name, pred)
        elif kind == "scaled_int16":
            save(pred_dir / name, np.round(pred * 1000).astype(np.int16), slope=1e-3)
        elif kind == "misshaped":
            save(pred_dir / name, pred[..., None].astype(np.float32))
        if kind == "truncated":
            data = (pred_dir / name).read_bytes()
            (pred_dir / name).write_bytes(data[: len(data) * 2 // 3])
    return pred_dir, label_dir, types


def test_pixel_matches_sklearn_on_concatenation(pixel_folders, monkeypatch) -> None:
    pred_dir, label_dir, _ = pixel_folders
    monkeypatch.setattr(evaluate_module, "SLAB_VOXELS", 250)  # 2 slices per slab: several slabs per case
    evaluation = evaluate_folder("pixel", pred_dir, label_dir, progress=False)
    names = sorted(p.name for p in label_dir.iterdir())
    ap, auroc = challenge_ap(pred_dir, label_dir, names)
    result = to_json(evaluation)
    assert result["metrics"]["ap"] == pytest.approx(ap, abs=1e-9)
    assert result["metrics"]["auroc"] == pytest.approx(auroc, abs=1e-9)
    assert result["cases"] == 8
    assert (result["missing_predictions"], result["misshaped_predictions"]) == (1, 1)
    assert result["unreadable_predictions"] == 1
    statuses = {case["name"]: case["status"] for case in result["per_case"]}
    assert statuses["toy_5.nii.gz"] == "unreadable" and statuses["toy_0.nii.gz"] == "ok"
    for case in result["per_case"]:
        case_ap, _ = challenge_ap(pred_dir, label_dir, [case["name"]]) if case["positives"] else (None, None)
        assert case["ap"] == pytest.approx(case_ap, abs=1e-9)


def test_pixel_per_type_ap(pixel_folders) -> None:
    pred_dir, label_dir, types = pixel_folders
    types_file = label_dir.parent / "anomaly_types.json"
    types_file.write_text(json.dumps(types))
    evaluation = evaluate_folder("pixel", pred_dir, label_dir, types_file, progress=False)
    per_type = to_json(evaluation)["per_type"]
    assert sorted(per_type) == ["noise_blob", "reflected_patch", "sink"]
    for name, row in per_type.items():
        members = [case for case, recorded in types.items() if not recorded or name in recorded]
        assert row["cases"] == len(members) - 1  # one normal case
        assert row["ap"] == pytest.approx(challenge_ap(pred_dir, label_dir, members)[0], abs=1e-9)
    assert "ap sink (3 cases + normals)" in format_table(evaluation)


def test_unreadable_label_drops_case(pixel_folders) -> None:
    pred_dir, label_dir, _ = pixel_folders
    (label_dir / "notes.txt").write_text("not a volume\n")
    evaluation = evaluate_folder("pixel", pred_dir, label_dir, progress=False)
    assert evaluation.skipped == ["notes.txt"] and len(evaluation.cases) == 8


def test_nan_prediction_fails_with_the_file_name(pixel_folders) -> None:
    pred_dir, label_dir, _ = pixel_folders
    pred = np.full(SHAPE, 0.5, dtype=np.float32)
    pred[3, 3, 3] = np.nan
    save(pred_dir / "toy_0.nii.gz", pred)
    with pytest.raises(CaseError, match="toy_0.nii.gz: 1 scores are NaN"):
        evaluate_folder("pixel", pred_dir, label_dir, progress=False)


def test_sample_task(tmp_path: Path) -> None:
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    pred_dir.mkdir()
    label_dir.mkdir()
    # (label text, prediction text or None for missing, score as the challenge reads it, types)
    cases = [
        ("0\n", "0.2\n", 0.2, []),
        ("1\n", "0.7\nignored second line\n", 0.7, ["sink"]),
        ("1", " 1.5 ", 1.0, ["source"]),
        ("0\n", "-3\n", 0.0, []),
        ("1\n", None, 0.0, ["sink", "source"]),
        ("1\n", "not a number\n", 0.0, ["source"]),
        ("0\n", "0.7\n", 0.7, []),
        ("1.0\n", "0.2", 0.2, ["sink"]),
    ]
    types = {}
    for i, (label, pred, _, recorded) in enumerate(cases):
        (label_dir / f"toy_{i}.nii.gz.txt").write_text(label)
        if pred is not None:
            (pred_dir / f"toy_{i}.nii.gz.txt").write_text(pred)
        types[f"toy_{i}.nii.gz"] = recorded
    types_file = tmp_path / "anomaly_types.json"
    types_file.write_text(json.dumps(types))
    result = to_json(evaluate_folder("sample", pred_dir, label_dir, types_file, progress=False))
    labels = np.array([round(float(c[0])) for c in cases])
    scores = np.array([c[2] for c in cases])
    assert [case["score"] for case in result["per_case"]] == pytest.approx(scores)
    assert result["metrics"]["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert result["metrics"]["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert (result["missing_predictions"], result["unreadable_predictions"]) == (1, 1)
    for name in ("sink", "source"):
        keep = [not c[3] or name in c[3] for c in cases]
        expected = average_precision_score(labels[keep], scores[keep])
        assert result["per_type"][name]["ap"] == pytest.approx(expected, abs=1e-9)


def test_choose_slices() -> None:
    area = np.zeros(40, dtype=int)
    area[10:21] = [1, 2, 3, 5, 9, 4, 3, 2, 2, 1, 1]
    assert choose_slices(area) == [12, 14, 17]
    assert choose_slices(np.zeros(40, dtype=int)) == [10, 20, 30]


def test_cli_writes_json_and_figures(pixel_folders, tmp_path: Path) -> None:
    pred_dir, label_dir, types = pixel_folders
    (label_dir.parent / "anomaly_types.json").write_text(json.dumps(types))  # found by default
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env.update(PYTHONPATH=str(REPO), HOME=str(home))
    out_json, figures = tmp_path / "scores.json", tmp_path / "figures"
    command = [sys.executable, "-m", "mood_vqad", "--no-progress", "evaluate", str(pred_dir), str(label_dir)]
    command += ["--task", "pixel", "--json", str(out_json), "--figures", str(figures)]
    command += ["--images", str(pred_dir)]  # predictions stand in for images: one mis-shaped, one truncated
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out_json.read_text())
    names = sorted(p.name for p in label_dir.iterdir())
    assert result["metrics"]["ap"] == pytest.approx(challenge_ap(pred_dir, label_dir, names)[0], abs=1e-9)
    assert sorted(result["per_type"]) == ["noise_blob", "reflected_patch", "sink"]
    assert f"{result['metrics']['ap']:.6f}" in done.stdout
    assert (figures / "precision_recall.png").stat().st_size > 0
    assert sorted(p.name for p in (figures / "cases").iterdir()) == [f"toy_{i}.png" for i in range(8)]
    assert sorted(p.name for p in figures.iterdir()) == ["cases", "precision_recall.png"]  # config dir gone
    assert not any(home.iterdir())
    assert "toy_4.nii.gz: image not shown (shape (12, 10, 9, 1)" in done.stderr
    assert "toy_0.nii.gz: image not shown" not in done.stderr
    assert "%" not in done.stderr  # --no-progress: no bar


def test_cli_reports_a_missing_label_folder(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "mood_vqad",
        "evaluate",
        str(tmp_path),
        str(tmp_path / "nope"),
        "--task",
        "sample",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "nope: input folder does not exist" in done.stderr
