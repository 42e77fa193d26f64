"""Detection scores of weights beside the no-learning floor: per region, variant and evaluation set.

Runs the real command line for each region, variant and set, scores with `mood-vqad evaluate` and prints
Markdown tables: pixel AP (with its ratio to the intensity floor's), AUROC, best Dice and sample AP for
every set, then pixel AP per anomaly type and seconds per volume. The intensity floor (`--method
intensity-floor`, no network) is always run: no learned row is printed without its floor.

    PYTHONPATH=. python scripts/detection_table.py --set in-dist=INDIST held-out=TOY lesions=LESIONS
        [--weights weights] [--out DIR] [--regions brain abdom] [--variants rec static ...]
        [-- extra predict options]

Each set folder holds REGION/toy and REGION/toy_label/{sample,pixel}: `mood-vqad data toy ...
--challenge-layout` (held out; `--split train` for the in-distribution set, the method's upper bound) or
`mood-vqad data lesions` (real tumours, abdomen only). The VAE baselines (`--variants vae-rec vae-combi ...`,
weights in WEIGHTS/REGION-vae) are rows only when asked for. A region a set lacks is left out of that set's
columns. Options after `--` go to every `predict` call, e.g. `-- --slice-stride 16 --restorations 4`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mood_vqad.config import VAE_METHODS

REPO = Path(__file__).resolve().parents[1]
FLOOR = "intensity"
# restoration variants: name -> (--masking, --neighbour-rule, --residual-mask, what it is)
RESTORATIONS = {
    "static": ("static", "off", "off", "restoration, mask once"),
    "static+nb": ("static", "on", "off", "mask once, neighbour rule"),
    "static+mask": ("static", "off", "on", "mask once, residual only near changed codes"),
    "dynamic": ("dynamic", "off", "off", "restoration, the authors' rule"),
    "dynamic+nb": ("dynamic", "on", "off", "the authors' rule, neighbour rule"),
    "dynamic+mask": ("dynamic", "off", "on", "the authors' rule, residual only near changed codes"),
}
# name -> (predict options, what it is); the sample score of every restoration variant is the same.
VARIANTS = {
    FLOOR: (["--method", "intensity-floor"], "robust intensity deviation |x - median| / MAD, no network"),
    "rec": (["--method", "vqvae-rec"], "VQ-VAE reconstruction error, no prior"),
    **{
        name: (["--masking", masking, "--neighbour-rule", neighbour, "--residual-mask", mask], what)
        for name, (masking, neighbour, mask, what) in RESTORATIONS.items()
    },
    **{method: (["--method", method], "VAE baseline (REGION-vae weights)") for method in VAE_METHODS},
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


def evaluate(toy: Path, out: Path, variant: str, task: str, args: argparse.Namespace) -> tuple[dict, float]:
    """Predict one task of one toy set (REGION folder) with one variant and score it."""
    pred = out / variant / task
    pred.mkdir(parents=True, exist_ok=True)
    options = [*VARIANTS[variant][0], "--region", toy.name, "--weights", str(args.weights), *args.predict]
    seconds = cli("predict", task, str(toy / "toy"), str(pred), *options)
    report = out / variant / f"{task}.json"
    cli("evaluate", str(pred), str(toy / "toy_label" / task), "--task", task, "--json", str(report))
    cases = len(list((toy / "toy").glob("*.nii.gz")))
    return json.loads(report.read_text()), seconds / cases


def fmt(value: float | None) -> str:
    """Four decimals (pixel APs here are small), or n/a."""
    return "n/a" if value is None else f"{value:.4f}"


def ratio(value: float | None, floor: float | None) -> str:
    """value / floor as 'x2.5', or '' where either is missing or the floor is 0."""
    return f" (x{value / floor:.1f})" if value is not None and floor else ""


def score_set(toy: Path, out: Path, variants: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """Every variant's pixel and sample metrics, per-type APs and seconds on one region's set."""
    results, sample_of = {}, {}
    for variant in variants:
        family = "prior" if variant in RESTORATIONS else variant  # the VAE maps each have their own score
        if family not in sample_of:
            sample_of[family] = evaluate(toy, out, variant, "sample", args)[0]["metrics"]
        pixel, seconds = evaluate(toy, out, variant, "pixel", args)
        results[variant] = {**pixel, "sample": sample_of[family], "seconds": seconds}
        print(f"{toy} {variant}: pixel AP {fmt(pixel['metrics']['ap'])}", file=sys.stderr, flush=True)
    return results


def cells(result: dict | None, floor: dict | None) -> list[str]:
    """pixel AP (x floor), AUROC, best Dice, sample AP of one set, or n/a where the set lacks the region."""
    if result is None:
        return ["n/a"] * 4
    m, f = result["metrics"], floor["metrics"] if floor else {}
    return [
        fmt(m["ap"]) + ratio(m["ap"], f.get("ap")),
        fmt(m["auroc"]),
        fmt(m["best_dice"]),
        fmt(result["sample"]["ap"]),
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    """The script's options, those after `--` kept for predict."""
    predict = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set", nargs="+", required=True, metavar="NAME=DIR", help="evaluation sets, in order"
    )
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--out", type=Path, default=Path("detection-table"), help="predictions and reports")
    parser.add_argument("--regions", nargs="+", default=["brain", "abdom"])
    learned = [v for v in VARIANTS if v != FLOOR]
    default = [v for v in learned if v not in VAE_METHODS]
    parser.add_argument("--variants", nargs="+", choices=learned, default=default, help="learned rows")
    args = parser.parse_args(argv)
    if any("=" not in s for s in args.set):
        parser.error("--set takes NAME=DIR")
    args.sets = dict(s.split("=", 1) for s in args.set)
    args.predict = predict
    return args


def main() -> None:
    """Evaluate every region, variant and set; print the tables."""
    args = parse(sys.argv[1:])
    variants = [FLOOR, *args.variants]
    rows, types = [], []
    for region in args.regions:
        scored = {
            name: score_set(Path(folder) / region, args.out / name / region, variants, args)
            for name, folder in args.sets.items()
            if (Path(folder) / region / "toy").is_dir()
        }
        for variant in variants:
            of = {name: scored.get(name, {}) for name in args.sets}
            row = [c for name in args.sets for c in cells(of[name].get(variant), of[name].get(FLOOR))]
            seconds = max((s[variant]["seconds"] for s in scored.values()), default=0.0)
            rows.append(f"| {region} | {variant} | {' | '.join(row)} | {seconds:.0f} |")
            for name, s in scored.items():
                per_type = ", ".join(f"{t} {fmt(v['ap'])}" for t, v in sorted(s[variant]["per_type"].items()))
                types.append(f"| {region} | {variant} | {name} | {per_type} |")
    columns = [f"{name} {c}" for name in args.sets for c in ("pixel AP", "AUROC", "best Dice", "sample AP")]
    print(f"predict options: {' '.join(args.predict) or '(config defaults)'}; weights {args.weights}")
    print(f"| region | variant | {' | '.join(columns)} | pixel s/volume |")
    print("|---" * (len(columns) + 3) + "|")
    print("\n".join(rows))
    print("\n| region | variant | set | pixel AP per anomaly type |\n|---|---|---|---|")
    print("\n".join(types))
    print(
        "\npixel AP (xN): N times the intensity floor's on the same set. variants: "
        + "; ".join(f"{k}: {v[1]}" for k, v in VARIANTS.items() if k in variants)
    )


if __name__ == "__main__":
    main()
