"""Time and peak memory of `mood-vqad evaluate --task pixel` on abdomen-sized cases (default: four 512^3).

Builds the cases in a temporary folder (float32 predictions on 1000 levels, so full of ties, plus a
few anomalous blobs per case), runs the evaluation in a subprocess and reports its wall time and peak
resident memory: ru_maxrss of that child alone, from os.wait4. Linux carries a parent's peak RSS into a
child across fork + exec, so the cases are built in a separate process and this one stays small.
Target: < 4 GB, where sklearn's average_precision_score on the concatenated 537M voxels is estimated at
15-25 GB (a sort of every score plus cumulative sums over all of them).

    python scripts/benchmark_scorer.py [--size 512] [--cases 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_GB = 4.0


def build_case(rng: np.random.Generator, size: int, pred_path: Path, label_path: Path) -> None:
    """Write one label (a few cubic blobs, uint8) and its prediction (float32)."""
    label = np.zeros((size, size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        side = int(rng.integers(size // 32, size // 8))
        corner = rng.integers(0, size - side, size=3)
        label[tuple(slice(c, c + side) for c in corner)] = 1
    # (size^3,) int16 levels -> float32 in [0, 1.3]: ties everywhere, clipped above 1 by the scorer.
    pred = rng.integers(0, 1000, size=label.shape, dtype=np.int16).astype(np.float32) / 1000
    pred += 0.3 * label
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(label_path))
    nib.save(nib.Nifti1Image(pred, np.eye(4)), str(pred_path))


def build_cases(root: Path, cases: int, size: int, seed: int) -> None:
    """Write cases 00000.nii.gz ... into root/pred and root/label."""
    rng = np.random.default_rng(seed)
    for i in range(cases):
        name = f"{i:05d}.nii.gz"
        build_case(rng, size, root / "pred" / name, root / "label" / name)
        print(f"built case {i + 1}/{cases}", file=sys.stderr)


def run_measured(command: list[str], log_path: Path) -> tuple[int, float, float]:
    """Run a command (output to log_path); return its exit code, wall seconds and peak RSS in GB."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    return process.returncode, time.perf_counter() - start, usage.ru_maxrss / 2**20  # KiB on Linux


def main() -> int:
    """Build the cases, run the evaluation, print the table."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size", type=int, default=512, help="side of each cubic case")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="build the cases in this folder and keep them")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mood-scorer-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        pred_dir, label_dir = root / "pred", root / "label"
        pred_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        builder = multiprocessing.Process(target=build_cases, args=(root, args.cases, args.size, args.seed))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            return 1
        build_s = time.perf_counter() - start

        out_json, log_path = root / "scores.json", root / "evaluate.log"
        command = [sys.executable, "-m", "mood_vqad", "--no-progress", "evaluate"]
        command += [str(pred_dir), str(label_dir), "--task", "pixel", "--json", str(out_json)]
        code, wall_s, peak_gb = run_measured(command, log_path)
        if code != 0:
            print(log_path.read_text(), file=sys.stderr)
            return code
        result = json.loads(out_json.read_text())

    voxels = args.cases * args.size**3
    rows = [
        ("cases", f"{args.cases} x {args.size}^3"),
        ("voxels", f"{voxels:,}"),
        ("build time (s)", f"{build_s:.1f}"),
        ("evaluate wall time (s)", f"{wall_s:.1f}"),
        ("evaluate peak RSS (GB)", f"{peak_gb:.2f}"),
        ("target peak RSS (GB)", f"< {TARGET_GB:.0f} ({'met' if peak_gb < TARGET_GB else 'MISSED'})"),
        ("throughput (Mvoxel/s)", f"{voxels / wall_s / 1e6:.1f}"),
        ("AP", f"{result['metrics']['ap']:.6f}"),
        ("AUROC", f"{result['metrics']['auroc']:.6f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    return 0 if peak_gb < TARGET_GB else 1


if __name__ == "__main__":
    sys.exit(main())
