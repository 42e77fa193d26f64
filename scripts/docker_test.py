"""Build the Docker image and run it as the MOOD challenge does, offline and read-only, then check and score.

Both tasks in both forms: the short form (`IMAGE sample|pixel`, region worked out per case) and the
challenge's four scripts, on a small toy set in the challenge's layout (DATA/{brain,abdom}/{toy,toy_label})
that `mood-vqad data toy` builds from phantom volumes; outputs are scored with `mood-vqad evaluate`.
Then the failure modes: an unreadable case (exit 0, the others written), an unwritable output folder and
missing weights (non-zero), and a run without --read-only that must leave the container's file system
unchanged. Any failed step ends the script with a non-zero exit and a `docker_test FAILED:` line.

Usage: python scripts/docker_test.py [--base-image IMAGE] [--torch-wheel WHEEL] [--image TAG]
Needs a running Docker engine and the package importable (the repository's .venv).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mood_vqad.config import ABDOM, BRAIN, ModelConfig, PriorConfig, VQVAEConfig
from mood_vqad.inference.weights import build_modules, save_weights

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "docker-test"  # git-ignored; its weights/ is in the build context (.dockerignore)
# Brain cubes; abdomen cases with a side >= 384 so that the short form's region auto picks the abdomen.
SHAPES = {"brain": (64, 64, 64), "abdom": (384, 48, 48)}
CASES = 4
OTHER_UID = 4321  # owner of output folders that is neither root nor the image's usual uid 1000
START = time.monotonic()


class Failure(Exception):
    """A failed step; its message is one line."""


def log(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def run(command: list[str], expect_ok: bool = True, stream: bool = False) -> subprocess.CompletedProcess:
    """Run a command; a result other than expected (success or failure) raises Failure with its output."""
    result = subprocess.run(command, text=True, capture_output=not stream)
    if (result.returncode == 0) != expect_ok:
        if not stream:
            print(result.stdout + result.stderr, file=sys.stderr)
        expected = "success" if expect_ok else "a non-zero exit"
        raise Failure(f"expected {expected}, got exit {result.returncode}: {' '.join(command)}")
    return result


def tiny_weights(folder: Path) -> None:
    """Randomly initialised brain and abdomen models in the real weights format (as tests/conftest.py)."""
    vqvae = VQVAEConfig(channels=(4, 8, 16), res_blocks=1, num_codes=16, code_dim=8)
    prior = PriorConfig(num_codes=16, grid=(8, 8), channels=16, blocks=2, res_blocks=1, attention_dim=8)
    for seed, region in enumerate((BRAIN, ABDOM)):
        region = dataclasses.replace(region, slice_size=32, slice_stride=4, restorations=3)
        config = ModelConfig(region=region, vqvae=vqvae, prior=prior)
        torch.manual_seed(seed)
        save_weights(folder / region.name, config, build_modules(config))


def weights_folder() -> Path:
    """The repository's weights/ when it holds both regions, else tiny random weights; relative to ROOT."""
    if all((ROOT / "weights" / region).is_dir() for region in ("brain", "abdom")):
        log("weights: the repository's weights/")
        return Path("weights")
    folder = WORK / "weights"
    tiny_weights(folder)
    log(f"weights: weights/ lacks brain/ and abdom/: TINY RANDOM weights in {folder}, scores are meaningless")
    return folder.relative_to(ROOT)


def cli(*args: str) -> subprocess.CompletedProcess:
    """A mood-vqad command as a user runs it."""
    return run([sys.executable, "-m", "mood_vqad", "--no-progress", *args])


def phantom(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth textured ellipsoid in [0, 1] with background exactly 0 (a stand-in 'normal' volume)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 / r**2 for g, r in zip(grids, (0.8, 0.7, 0.75), strict=True)) < 1
    texture = 0.5 + 0.3 * np.sin(3 * grids[0]) * np.cos(2 * grids[1]) + 0.05 * rng.standard_normal(shape)
    return np.clip(texture, 0.1, 1.0).astype(np.float32) * inside


def toy_set(data: Path) -> None:
    """DATA/<region>/{toy,toy_label}: `mood-vqad data toy` on two phantom 'subjects' per region."""
    rng = np.random.default_rng(0)
    for region, shape in SHAPES.items():
        normal = WORK / "normal" / region
        normal.mkdir(parents=True)
        for subject in range(2):
            nib.save(nib.Nifti1Image(phantom(shape, rng), np.eye(4)), str(normal / f"{subject}.nii.gz"))
        cli("data", "toy", str(normal), str(data), "--region", region, "--cases", str(CASES),
                  "--challenge-layout")  # fmt: skip


def output_folder(path: Path, mode: int = 0o755, owner: int | None = None) -> Path:
    """A fresh output folder made as the challenge's test_docker.py makes it: by the caller, mode 0755."""
    path.mkdir(parents=True)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def owned_by(folder: Path, uid: int) -> None:
    """Every file in folder belongs to uid (the image ran as the folder's owner)."""
    wrong = [p.name for p in folder.iterdir() if p.stat().st_uid != uid]
    if wrong:
        raise Failure(f"{folder}: not owned by uid {uid}: {wrong}")


def docker_run(
    image: str, data: Path, pred: Path, *args: str, expect_ok: bool = True, options: tuple = ("--rm",)
) -> str:
    """docker run offline and read-only, DATA on /mnt/data (read-only), PRED on /mnt/pred; returns stderr."""
    mounts = ["-v", f"{data}:/mnt/data:ro", "-v", f"{pred}:/mnt/pred"]
    command = ["docker", "run", "--network", "none", "--read-only", *options, *mounts, image, *args]
    return run(command, expect_ok=expect_ok).stderr


def check_outputs(task: str, inputs: Path, pred: Path, stderr: str) -> None:
    """Every case has its file and nothing else is left; read as the challenge's scorer reads them."""
    cases = sorted(p.name for p in inputs.iterdir())
    expected = [f"{c}.txt" if task == "sample" else c for c in cases]
    found = sorted(p.name for p in pred.iterdir())
    if found != sorted(expected):
        raise Failure(f"{pred}: expected exactly {expected}, found {found}")
    for case, name in zip(cases, expected, strict=True):
        if not (pred / name).stat().st_mode & 0o004:  # the scorer may run as another user
            raise Failure(f"{pred / name}: not readable by other users")
        if task == "sample":
            lines = (pred / name).read_text().splitlines()
            if len(lines) != 1 or not 0.0 <= float(lines[0]) <= 1.0:
                raise Failure(f"{pred / name}: expected one float in [0, 1], got {lines}")
            continue
        scores = np.asarray(nib.load(str(pred / name)).dataobj).astype(np.float16)
        shape = nib.load(str(inputs / case)).shape
        in_range = np.isfinite(scores).all() and 0 <= scores.min() <= scores.max() <= 1
        if scores.shape != shape or not in_range:
            raise Failure(f"{pred / name}: shape {scores.shape} (input {shape}) or values outside [0, 1]")
    if stderr.count("no GPU visible: running on the CPU") != 1:
        raise Failure(f"{pred}: expected the no-GPU warning once in stderr:\n{stderr}")


def same_outputs(task: str, first: Path, second: Path) -> None:
    """Two output folders hold identical results (the short form picked the region the script names)."""
    for path in sorted(first.iterdir()):
        if task == "sample":
            equal = path.read_text() == (second / path.name).read_text()
        else:
            equal = np.array_equal(nib.load(str(path)).dataobj, nib.load(str(second / path.name)).dataobj)
        if not equal:
            raise Failure(f"{path.name}: {first} and {second} differ")


def score(task: str, pred: Path, labels: Path) -> float:
    """The challenge's metric (average precision) of a folder, from `mood-vqad evaluate`."""
    report = pred.parent / f"{pred.name}-{task}.json"
    cli("evaluate", str(pred), str(labels), "--task", task, "--json", str(report))
    ap = json.loads(report.read_text())["metrics"]["ap"]
    if ap is None or not 0.0 <= ap <= 1.0:
        raise Failure(f"{pred}: evaluate gave AP {ap}")
    return ap


def build(image: str, base_image: str | None, torch_wheel: Path | None, weights: Path) -> None:
    """docker build with network (packages); the torch wheel, if any, goes into docker/wheels/."""
    wheels = ROOT / "docker" / "wheels"
    for old in wheels.glob("*.whl"):
        old.unlink()
    if torch_wheel:
        shutil.copy2(torch_wheel, wheels)
    command = ["docker", "build", "--network", "host", "-t", image, "--build-arg", f"WEIGHTS={weights}"]
    if base_image:
        command += ["--build-arg", f"BASE_IMAGE={base_image}"]
    run([*command, str(ROOT)], stream=True)
    size = run(["docker", "image", "inspect", "-f", "{{.Size}}", image]).stdout
    log(f"built {image}: {int(size) / 1e6:.0f} MB")


def both_forms(image: str, data: Path, pred: Path) -> None:
    """Each task on each region through the challenge's script and the short form; check, compare, score.

    The script runs in the challenge's layout: OUT/<region> made by this (root) process, mode 0755, no
    --user. The short form writes into a folder of another owner (uid 4321), then runs with --user.
    """
    for task in ("sample", "pixel"):
        for region in SHAPES:
            inputs, labels = data / region / "toy", data / region / "toy_label" / task
            script = output_folder(pred / "script" / task / region)
            command = ("sh", f"/workspace/run_{task}_{region}.sh", "/mnt/data", "/mnt/pred")
            check_outputs(task, inputs, script, docker_run(image, inputs, script, *command))
            owned_by(script, os.getuid())
            short = output_folder(pred / "short" / task / region, owner=OTHER_UID)
            check_outputs(task, inputs, short, docker_run(image, inputs, short, task))
            owned_by(short, OTHER_UID)
            same_outputs(task, script, short)
            as_user = output_folder(pred / "user" / task / region, owner=1000)
            options = ("--rm", "--user", "1000:1000")
            check_outputs(task, inputs, as_user, docker_run(image, inputs, as_user, task, options=options))
            owned_by(as_user, 1000)
            log(f"{task} {region}: challenge layout, other owner, --user: written, checked, equal; "
                f"AP {score(task, script, labels):.3f}")  # fmt: skip


def failure_modes(image: str, data: Path, pred: Path) -> None:
    """An unreadable case is skipped with exit 0; an unwritable output folder or no weights exit non-zero."""
    broken = WORK / "broken"
    shutil.copytree(data / "brain" / "toy", broken)
    (broken / "broken.nii.gz").write_bytes(b"\x1f\x8b truncated")
    out = output_folder(pred / "broken")
    stderr = docker_run(image, broken, out, "sh", "/workspace/run_sample_brain.sh", "/mnt/data", "/mnt/pred")
    if "ERROR: broken.nii.gz: unreadable NIfTI" not in stderr:
        raise Failure(f"no ERROR line for the unreadable case:\n{stderr}")
    (broken / "broken.nii.gz").unlink()
    check_outputs("sample", broken, out, stderr)
    log("unreadable case: logged, the others written, exit 0")

    inputs = data / "brain" / "toy"
    locked = output_folder(pred / "locked", mode=0o555)
    command = ("sh", "/workspace/run_pixel_brain.sh", "/mnt/data", "/mnt/pred")
    stderr = docker_run(image, inputs, locked, *command, expect_ok=False)
    if "not writable" not in stderr or any(locked.iterdir()):
        raise Failure(f"unwritable output folder: expected an ERROR line and no files:\n{stderr}")
    out = output_folder(pred / "no-weights")
    options = ("--rm", "-e", "MOOD_VQAD_WEIGHTS=/nonexistent")
    stderr = docker_run(image, inputs, out, "sample", expect_ok=False, options=options)
    if "no usable brain weights" not in stderr or "readable, but no output was written" not in stderr:
        raise Failure(f"missing weights: expected ERROR lines:\n{stderr}")
    log("unwritable output folder, missing weights: non-zero exit")


def started(name: str, line: str, timeout: float = 300) -> str:
    """Wait until a detached container's log holds line; returns the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = run(["docker", "logs", name]).stderr
        if line in logs:
            return logs
        time.sleep(0.5)
    raise Failure(f"{name}: no {line!r} in its log within {timeout:.0f} s")


def docker_stop(image: str, data: Path, pred: Path) -> None:
    """SIGKILL leaves a temporary folder that the next run removes; docker stop reaches the predictor,
    which exits 143 at once and leaves no temporaries; whatever it wrote is complete."""
    inputs, out = data / "abdom" / "toy", output_folder(pred / "stopped")
    mounts = ["-v", f"{inputs}:/mnt/data:ro", "-v", f"{out}:/mnt/pred"]
    slow = ("pixel", "--slice-stride", "1", "--restorations", "64")
    names = [f"mood-vqad-stop-{time.time_ns()}-{i}" for i in range(2)]
    try:
        for name in names:
            run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--network",
                    "none",
                    "--read-only",
                    "--name",
                    name,
                    *mounts,
                    image,
                    *slow,
                ]
            )
            started(name, "pixel task: ")
            if name == names[0]:
                run(["docker", "kill", name])  # SIGKILL: no cleanup can run
                run(["docker", "wait", name])
                if not list(out.glob(".mood-vqad-tmp.*")):
                    raise Failure("docker kill: expected the run's temporary folder to be left")
        logs = started(names[1], "by an earlier run that was killed", timeout=10)
        clock = time.monotonic()
        run(["docker", "stop", "--time", "30", names[1]])
        took = time.monotonic() - clock
        code = run(["docker", "inspect", "-f", "{{.State.ExitCode}}", names[1]]).stdout.strip()
        logs = run(["docker", "logs", names[1]]).stderr
    finally:
        for name in names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    left = sorted(p.name for p in out.iterdir())
    if code != "143" or "stopped by SIGTERM" not in logs or took > 25:
        raise Failure(f"docker stop: exit {code} after {took:.1f} s, expected 143 and a line:\n{logs}")
    if any(entry.startswith(".") for entry in left):
        raise Failure(f"docker stop: temporaries left in the output folder: {left}")
    for entry in left:
        nib.load(str(out / entry)).get_fdata()  # complete files only
    log(
        f"docker kill left a temporary folder, the next run removed it; docker stop: exit 143 in {took:.1f} s"
    )


def no_writes(image: str, inputs: Path, pred: Path) -> None:
    """Without --read-only, a run leaves the container's own file system unchanged (no caches anywhere)."""
    out, name = output_folder(pred / "writes"), f"mood-vqad-test-{time.time_ns()}"
    mounts = ["-v", f"{inputs}:/mnt/data:ro", "-v", f"{out}:/mnt/pred"]
    try:
        run(["docker", "run", "--network", "none", "--name", name, *mounts, image, "pixel"])
        changed = run(["docker", "diff", name]).stdout.strip()
    finally:
        subprocess.run(["docker", "rm", name], capture_output=True)
    if changed:
        raise Failure(f"the container wrote outside the output folder:\n{changed}")
    log("no writes outside the output folder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base-image", help="BASE_IMAGE build argument (default: the Dockerfile's)")
    parser.add_argument("--torch-wheel", type=Path, help="torch wheel for a base without torch")
    parser.add_argument("--image", default="mood-vqad:test", help="tag of the image built and tested")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    data, pred = WORK / "data", WORK / "pred"
    build(args.image, args.base_image, args.torch_wheel, weights_folder())
    toy_set(data)
    log(f"toy set: {CASES} cases per region in {data}, shapes {SHAPES}")
    both_forms(args.image, data, pred)
    failure_modes(args.image, data, pred)
    docker_stop(args.image, data, pred)
    no_writes(args.image, data / "brain" / "toy", pred)
    log("docker_test passed")


if __name__ == "__main__":
    try:
        main()
    except Failure as exc:
        log(f"docker_test FAILED: {exc}")
        sys.exit(1)
