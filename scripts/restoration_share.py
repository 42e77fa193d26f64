"""Share of codes above the restoration threshold, under the weights' own threshold and the ln K cap.

On held-out normals this is what calibration aims at (10 % at its default 90th percentile); on toy and
lesion sets it also reports the share among codes that cover a labelled anomaly and among the others. A
threshold that leaves most anomalous codes unrestored has switched restoration off where it matters.

    PYTHONPATH=. python scripts/restoration_share.py --region brain [--weights weights] [--slice-stride 16]
        --folders normals=DIR toy=SET/brain ...

A folder is plain volumes, or a set's region folder (toy/ and toy_label/pixel/, as `data toy` and
`data lesions` write them). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mood_vqad.config import PredictOptions  # noqa: E402
from mood_vqad.inference.detector import VQVAEDetector as Detector  # noqa: E402
from mood_vqad.inference.slicing import extract_slices  # noqa: E402
from mood_vqad.io import list_cases, load_volume  # noqa: E402
from mood_vqad.training.restore_rule import uniform_nll  # noqa: E402


def code_labels(label: np.ndarray, detector: Detector, indices: np.ndarray) -> torch.Tensor:
    """Which codes of the scored slices cover a labelled voxel: (S, h, w) bool."""
    slices = extract_slices(label.astype(np.float32), detector.region, indices)  # (S, 1, size, size)
    return F.adaptive_max_pool2d(slices, detector.config.prior.grid)[:, 0] > 0


def shares(detector: Detector, folder: Path, stride: int, thresholds: list[float]) -> dict[str, list]:
    """Pooled NLL of all, anomalous and normal codes of a folder's volumes, as shares above each threshold."""
    settings = detector.settings_from(PredictOptions(slice_stride=stride))
    toy = folder / "toy" if (folder / "toy").is_dir() else folder
    pooled: dict[str, list[torch.Tensor]] = {"all": [], "anomalous": [], "other": []}
    for case in list_cases(toy):
        volume = load_volume(case)[0]
        encoded = detector.encode(volume, settings)
        nll = detector.code_nll(encoded, settings).cpu()
        pooled["all"].append(nll.flatten())
        label_file = folder / "toy_label" / "pixel" / case.name
        if label_file.is_file():
            covered = code_labels(load_volume(label_file)[0], detector, encoded.indices)
            pooled["anomalous"].append(nll[covered])
            pooled["other"].append(nll[~covered])
    out = {}
    for kind, parts in pooled.items():
        values = torch.cat(parts) if parts else torch.zeros(0)
        out[kind] = [len(values)] + [
            float((values > t).float().mean()) if len(values) else None for t in thresholds
        ]
    return out


def main() -> None:
    """Parse arguments, measure every folder, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--region", required=True)
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--slice-stride", type=int, default=None)
    parser.add_argument("--folders", nargs="+", required=True, metavar="NAME=DIR")
    args = parser.parse_args()
    detector = Detector.load(args.weights / args.region, torch.device("cpu"))
    stride = args.slice_stride or detector.region.slice_stride
    shipped, cap = detector.region.restore_threshold, uniform_nll(detector.config.prior.num_codes)
    print(
        f"{args.region}: threshold {shipped:.2f} nats (weights), cap ln K = {cap:.2f}; every {stride}th slice"
    )
    print("| region | set | codes | kind | share > weights' threshold | share > ln K |")
    print("|---|---|---|---|---|---|")
    for spec in args.folders:
        name, folder = spec.split("=", 1)
        for kind, (count, above, above_cap) in shares(detector, Path(folder), stride, [shipped, cap]).items():
            if count:
                print(
                    f"| {args.region} | {name} | {count} | {kind} | {above:.3f} | {above_cap:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
