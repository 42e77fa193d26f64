"""The main job on shipped defaults: fetch real anatomy, build toy sets, predict both tasks, score, draw.

Run by `make demo`. Every step is the `mood-vqad` command a user would type; each is printed before it
runs, with its time after. Outputs go to demo/ (git-ignored); the data cache to ~/.cache/mood-vqad.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mood_vqad.data.sources import default_cache
from mood_vqad.inference.weights import default_weights_dir

# Settings chosen so the CPU finishes in minutes; a GPU runs the config defaults (every 8th slice, 15).
CPU_SETTINGS = ["--slice-stride", "8", "--restorations", "4"]
# (region, fetched cube folder, toy cases); the abdomen at 128^3 keeps the demo inside its time budget.
TOY_SETS = [("brain", "brain-256", 4), ("abdom", "abdom-128", 4)]


def run(*args: str) -> float:
    """Run one mood-vqad command, echoing it; returns its wall time in seconds."""
    command = [sys.executable, "-m", "mood_vqad", *args]
    print("$ mood-vqad " + shlex.join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo"), help="where toy sets and results go")
    parser.add_argument("--weights", default=None, help="weights folder (default: the shipped weights/)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    cuda = args.device == "cuda" or (args.device == "auto" and _cuda_available())
    settings = [] if cuda else CPU_SETTINGS
    print(f"prediction settings: {' '.join(settings) or 'config defaults'} ({'GPU' if cuda else 'CPU'})")
    weights = ["--weights", args.weights] if args.weights else []
    data = default_cache() / "data"
    times = {"fetch": run("data", "fetch", "--sizes", "full", "128")}
    results = {}
    weights_dir = Path(args.weights) if args.weights else default_weights_dir()
    for region, cubes, cases in TOY_SETS:
        toy = args.out / "data"
        label = toy / region / "toy_label"
        times[f"{region} toy set"] = run(
            "data", "toy", str(data / cubes / "holdout"), str(toy), "--region", region, "--cases", str(cases),
            "--donors", str(data / cubes / "train"), "--challenge-layout", "--overwrite",
        )  # fmt: skip
        if not (weights_dir / region / "config.json").is_file():
            print(f"no {region} weights in {weights_dir}: toy set built, prediction skipped", file=sys.stderr)
            continue
        for task in ("sample", "pixel"):
            pred = args.out / "pred" / region / task
            pred.mkdir(parents=True, exist_ok=True)
            times[f"{region} {task}"] = run(
                "--no-progress", "predict", task, str(toy / region / "toy"), str(pred), "--region", region,
                "--device", args.device, *settings, *weights,
            )  # fmt: skip
            report = args.out / "results" / f"{region}_{task}.json"
            report.parent.mkdir(parents=True, exist_ok=True)
            figures = args.out / "figures" / f"{region}_{task}"
            run(
                "--no-progress", "evaluate", str(pred), str(label / task), "--task", task,
                "--json", str(report), "--figures", str(figures), "--images", str(toy / region / "toy"),
            )  # fmt: skip
            results[f"{region} {task}"] = json.loads(report.read_text())
    if not results:
        print(
            f"\nno weights in {weights_dir}: train and export them first (see README, Training)",
            file=sys.stderr,
        )
        return 2
    print(f"\n{'toy set, task':<16}{'AP':>8}{'AUROC':>8}{'best Dice':>11}")
    for name, result in results.items():
        m = result["metrics"]
        print(f"{name:<16}{_fmt(m['ap']):>8}{_fmt(m['auroc']):>8}{_fmt(m['best_dice']):>11}")
    print("\nstep times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"results: {args.out / 'results'}, figures: {args.out / 'figures'}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
