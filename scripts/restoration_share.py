"""Share of codes above the restoration threshold, under the weights' own threshold and the ln K cap.

On held-out normals this is what calibration aims at (10 % at its default 90th percentile); on toy and
lesion sets it also reports the share among codes that cover a labelled anomaly and among the others. A
threshold that leaves most anomalous codes unrestored has switched restoration off where it matters.
For labelled sets a second table ranks the codes by their NLL (AP and AUROC of anomalous against other
codes, any threshold): whether the prior sees the anomalies at all, before restoration and decoding.
`--per-volume` adds each volume's own threshold (raised to the config's `restore_quantile` of its codes, as
prediction does) and where the codes above it lie: a share outside the foreground is restoration spent
where the map is zeroed, e.g. on a background level the prior has not seen.

    PYTHONPATH=. python scripts/restoration_share.py --region brain [--weights weights] [--slice-stride 16]
        --folders normals=DIR toy=SET/brain ... [--per-volume]

A folder is plain volumes, or a set's region folder (toy/ and toy_label/pixel/, as `data toy` and
`data lesions` write them). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mood_vqad.config import PredictOptions  # noqa: E402
from mood_vqad.evaluation.metrics import count_values, ranking, summarize  # noqa: E402
from mood_vqad.inference.detector import Settings  # noqa: E402
from mood_vqad.inference.detector import VQVAEDetector as Detector  # noqa: E402
from mood_vqad.inference.slicing import foreground_mask  # noqa: E402
from mood_vqad.io import list_cases, load_volume  # noqa: E402
from mood_vqad.training.restore_rule import uniform_nll  # noqa: E402


def volume_row(
    detector: Detector, nll: torch.Tensor, inside: torch.Tensor, settings: Settings
) -> dict[str, float]:
    """One volume's own restoration threshold, the share of its codes above it, the share of those outside
    the foreground, and the mean NLL outside and inside (nll, inside: (S, h, w))."""
    scope = inside if detector.region.restore_quantile_foreground else None
    threshold = detector.volume_rule(nll, settings.rule, scope).threshold
    above = nll > threshold
    return {
        "threshold": threshold,
        "above": float(above.float().mean()),
        "outside": float((above & ~inside).sum() / max(int(above.sum()), 1)),
        "nll_out": float(nll[~inside].mean()) if (~inside).any() else float("nan"),
        "nll_in": float(nll[inside].mean()),
    }


def pooled_nll(
    detector: Detector, folder: Path, stride: int
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    """NLL of all, anomalous and other codes of a folder's volumes, pooled over its cases (1-D each), and
    each case's `volume_row`."""
    settings = detector.settings_from(PredictOptions(slice_stride=stride))
    toy = folder / "toy" if (folder / "toy").is_dir() else folder
    pooled: dict[str, list[torch.Tensor]] = {"all": [], "anomalous": [], "other": []}
    rows = {}
    for case in list_cases(toy):
        volume = load_volume(case)[0]
        encoded = detector.encode(volume, settings)
        nll = detector.code_nll(encoded, settings).cpu()
        pooled["all"].append(nll.flatten())
        mask = foreground_mask(volume, detector.region)
        inside = torch.ones_like(nll, dtype=torch.bool)
        if mask is not None:
            inside = detector.covered_codes(mask, encoded.indices).cpu()
        rows[case.name] = volume_row(detector, nll, inside, settings)
        label_file = folder / "toy_label" / "pixel" / case.name
        if label_file.is_file():
            covered = detector.covered_codes(load_volume(label_file)[0], encoded.indices)
            pooled["anomalous"].append(nll[covered])
            pooled["other"].append(nll[~covered])
    return {kind: torch.cat(parts) if parts else torch.zeros(0) for kind, parts in pooled.items()}, rows


def code_ranking(nll: dict[str, torch.Tensor]) -> dict[str, float | int | None]:
    """AP, AUROC and counts of anomalous against other codes ranked by NLL (as the evaluation's metrics)."""
    scores = torch.cat([nll["anomalous"], nll["other"]]).numpy()
    labels = np.arange(len(scores)) < len(nll["anomalous"])
    return summarize(ranking(*count_values(scores, labels)))


def main() -> None:
    """Parse arguments, measure every folder, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--region", required=True)
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--slice-stride", type=int, default=None)
    parser.add_argument("--folders", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--per-volume", action="store_true", help="each volume's threshold and its codes")
    args = parser.parse_args()
    detector = Detector.load(args.weights / args.region, torch.device("cpu"))
    stride = args.slice_stride or detector.region.slice_stride
    shipped, cap = detector.region.restore_threshold, uniform_nll(detector.config.prior.num_codes)
    print(
        f"{args.region}: threshold {shipped:.2f} nats (weights), cap ln K = {cap:.2f}; every {stride}th slice"
    )
    print("| region | set | codes | kind | share > weights' threshold | share > ln K |")
    print("|---|---|---|---|---|---|")
    ranked, volumes = {}, {}
    for spec in args.folders:
        name, folder = spec.split("=", 1)
        nll, volumes[name] = pooled_nll(detector, Path(folder), stride)
        for kind, values in nll.items():
            if len(values):
                above, above_cap = (float((values > t).float().mean()) for t in (shipped, cap))
                print(
                    f"| {args.region} | {name} | {len(values)} | {kind} | {above:.3f} | {above_cap:.3f} |",
                    flush=True,
                )
        if len(nll["anomalous"]) and len(nll["other"]):
            ranked[name] = code_ranking(nll)
    if ranked:
        print("\nanomalous against other codes, ranked by NLL")
        print("| region | set | anomalous codes | other codes | AP | AUROC |")
        print("|---|---|---|---|---|---|")
        for name, m in ranked.items():
            counts = f"{m['positives']} | {m['negatives']}"
            print(f"| {args.region} | {name} | {counts} | {m['ap']:.4f} | {m['auroc']:.3f} |")
    if args.per_volume:
        print("\nper volume: its own threshold and the codes above it")
        print("| region | set | volume | threshold | share above | outside the foreground | NLL out | in |")
        print("|---|---|---|---|---|---|---|---|")
        for name, rows in volumes.items():
            for case, r in rows.items():
                print(
                    f"| {args.region} | {name} | {case} | {r['threshold']:.2f} | {r['above']:.3f} | "
                    f"{r['outside']:.3f} | {r['nll_out']:.2f} | {r['nll_in']:.2f} |"
                )


if __name__ == "__main__":
    main()
