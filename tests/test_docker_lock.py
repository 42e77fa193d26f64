"""The image's lock file: its input is pyproject.toml's dependencies without torch, all pinned and hashed."""

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def requirements(lines: list[str]) -> dict[str, str]:
    """{canonical name: specifier} of requirement lines, comments and blanks skipped."""
    found = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): str(r.specifier) for r in found}


def test_lock_input_is_the_package_dependencies_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {name: spec for name, spec in requirements(project).items() if name != "torch"}
    assert requirements((ROOT / "docker" / "requirements.in").read_text().splitlines()) == wanted


def test_lock_pins_every_requirement_with_hashes_and_leaves_torch_out():
    lock = (ROOT / "docker" / "requirements.lock").read_text()
    pinned = {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.M)}
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in entry for entry in entries) and len(entries) == len(pinned)
    names = requirements((ROOT / "docker" / "requirements.in").read_text().splitlines())
    assert set(names) <= set(pinned) and "torch" not in pinned
