"""Detection scores of weights on toy sets: sample AP, pixel AP, AUROC, best Dice and pixel AP per type.

Runs the real command line for each region and variant (restoration rule, or the plain-reconstruction
floor), scores with `mood-vqad evaluate` and prints a Markdown table, plus seconds per volume.

    PYTHONPATH=. python scripts/detection_table.py --toy TOY_ROOT [--weights weights] [--out DIR]
        [--regions brain abdom] [--variants static dynamic ...] [-- extra predict options]

TOY_ROOT holds REGION/toy and REGION/toy_label/{sample,pixel} (`mood-vqad data toy ... --challenge-layout`).
Options after `--` go to every `predict` call, e.g. `-- --slice-stride 8 --restorations 4`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name -> (predict options, what it is); the sample score of every restoration variant is the same.
VARIANTS = {
    "floor": (["--method", "vqvae-rec"], "VQ-VAE reconstruction error, no prior"),
    "static": (["--masking", "static", "--neighbour-rule", "off"], "restoration, mask once"),
    "static+nb": (["--masking", "static", "--neighbour-rule", "on"], "mask once, neighbour rule"),
    "dynamic": (["--masking", "dynamic", "--neighbour-rule", "off"], "restoration, the authors' rule"),
    "dynamic+nb": (["--masking", "dynamic", "--neighbour-rule", "on"], "the authors' rule, neighbour rule"),
}


def cli(*args: str) -> float:
    """Run `mood-vqad ARGS` and return its wall time; stop on failure."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mood_vqad", "--no-progress", *args]
    # stdout carries evaluate's own table; the numbers are read from its JSON
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        sys.exit(f"failed: mood-vqad {' '.join(args)}")
    return time.perf_counter() - start


def evaluate(region: str, variant: str, task: str, args: argparse.Namespace) -> tuple[dict, float]:
    """Predict one task of one region's toy set with one variant and score it."""
    toy = args.toy / region
    pred = args.out / region / variant / task
    pred.mkdir(parents=True, exist_ok=True)
    options = [*VARIANTS[variant][0], "--region", region, "--weights", str(args.weights), *args.predict]
    seconds = cli("predict", task, str(toy / "toy"), str(pred), *options)
    report = args.out / region / variant / f"{task}.json"
    cli("evaluate", str(pred), str(toy / "toy_label" / task), "--task", task, "--json", str(report))
    cases = len(list((toy / "toy").glob("*.nii.gz")))
    return json.loads(report.read_text()), seconds / cases


def fmt(value: float | None) -> str:
    """Four decimals (pixel APs here are small), or n/a."""
    return "n/a" if value is None else f"{value:.4f}"


def main() -> None:
    """Parse arguments, evaluate every region and variant, print the tables."""
    argv = sys.argv[1:]
    predict = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--toy", type=Path, required=True, help="toy sets in the challenge layout")
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--out", type=Path, default=Path("detection-table"), help="predictions and reports")
    parser.add_argument("--regions", nargs="+", default=["brain", "abdom"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    args.predict = predict

    rows, types = [], []
    for region in args.regions:
        sample_of: dict[str, dict] = {}
        for variant in args.variants:
            family = "floor" if variant == "floor" else "prior"
            if family not in sample_of:
                sample_of[family] = evaluate(region, variant, "sample", args)[0]["metrics"]
            pixel, seconds = evaluate(region, variant, "pixel", args)
            m = pixel["metrics"]
            rows.append(
                f"| {region} | {variant} | {fmt(sample_of[family]['ap'])} | {fmt(m['ap'])} "
                f"| {fmt(m['auroc'])} "
                f"| {fmt(m['best_dice'])} | {seconds:.0f} |"
            )
            per_type = ", ".join(f"{name} {fmt(t['ap'])}" for name, t in sorted(pixel["per_type"].items()))
            types.append(f"| {region} | {variant} | {per_type} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"predict options: {' '.join(predict) or '(config defaults)'}; weights {args.weights}")
    print("| region | variant | sample AP | pixel AP | pixel AUROC | best Dice | pixel s/volume |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| region | variant | pixel AP per anomaly type |\n|---|---|---|")
    print("\n".join(types))
    print("\nvariants: " + "; ".join(f"{k}: {v[1]}" for k, v in VARIANTS.items() if k in args.variants))


if __name__ == "__main__":
    main()
