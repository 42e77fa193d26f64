"""Predictions of weights written before the layout redesign stay identical, for both families and tasks.

tests/reference/weights/ holds tiny fp16 weights folders saved by the code as it was before the redesign
(brain, abdom, brain-vae); tests/reference/outputs.json holds the digests of what `predict` wrote with
them then. Set MOOD_VQAD_WRITE_REFERENCE=1 to rewrite the digests (only when a change of outputs is meant).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import phantom, run_cli, save_nifti

REFERENCE = Path(__file__).parent / "reference"
DIGESTS = REFERENCE / "outputs.json"
# (method, region, extra options): both families, and restoration with both masking rules
RUNS = {
    "vqvae-restoration-brain": ("vqvae-restoration", "brain", ()),
    "vqvae-restoration-dynamic-brain": ("vqvae-restoration", "brain", ("--masking", "dynamic")),
    "vqvae-restoration-abdom": ("vqvae-restoration", "abdom", ()),
    "vqvae-rec-brain": ("vqvae-rec", "brain", ()),
    "vae-ensemble-brain": ("vae-ensemble", "brain", ("--energy-steps", "2")),
    "vae-elbo-grad-brain": ("vae-elbo-grad", "brain", ()),
}


def digest(path: Path) -> str:
    """The sha256 of what the challenge reads from an output: a sample file's text, a map's voxels."""
    if path.name.endswith(".txt"):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    data = np.asarray(nib.load(str(path)).dataobj)
    header = f"{data.shape} {data.dtype}".encode()
    return hashlib.sha256(header + np.ascontiguousarray(data).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("reference")
    cases = root / "cases"
    cases.mkdir()
    volume = phantom((32, 32, 40), seed=7)
    volume[10:16, 12:18, 14:20] = 1.0
    save_nifti(cases / "case.nii.gz", volume)
    found = {}
    for name, (method, region, extra) in RUNS.items():
        for task in ("sample", "pixel"):
            out = root / f"{name}-{task}"
            out.mkdir()
            args = ("predict", task, cases, out, "--weights", REFERENCE / "weights", "--region", region)
            result = run_cli(*args, "--method", method, "--device", "cpu", "--seed", "1", *extra)
            assert result.returncode == 0, result.stderr
            written = out / ("case.nii.gz.txt" if task == "sample" else "case.nii.gz")
            found[f"{name}/{task}"] = digest(written)
    return found


def test_outputs_equal_those_written_before_the_redesign(outputs):
    if os.environ.get("MOOD_VQAD_WRITE_REFERENCE") == "1":
        DIGESTS.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    expected = json.loads(DIGESTS.read_text())
    assert outputs == expected
