"""The lower bounds of pyproject.toml are what ``make test-oldest`` installs and tests.

``tests/oldest-constraints.txt`` pins the oldest version each dependency allows; a
floor raised in one file and not the other, or a pin that pip did not honour, would
make that run test something other than the floor."""

from __future__ import annotations

import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

PINS = ROOT / "tests" / "oldest-constraints.txt"
# Extras whose floors users get with the package; "test" and "bench" are our tools.
USER_EXTRAS = ("stats", "plot", "parquet", "dask")


def _floors() -> dict[str, Version]:
    """Each user-facing requirement's lower bound (``>=``), by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in USER_EXTRAS:
        lines += project["optional-dependencies"][extra]
    floors: dict[str, Version] = {}
    for line in lines:
        req = Requirement(line)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line!r}: give exactly one lower bound (>=) to test"
        floors[canonicalize_name(req.name)] = lower[0]
    return floors


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in PINS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
            assert match, f"{PINS.name}: {raw!r} is not NAME==VERSION"
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def test_every_floor_is_pinned_exactly() -> None:
    floors, pins = _floors(), _pins()
    assert {"pandas", "protobuf", "ipython", "ipywidgets", "numpy"} <= floors.keys()
    mismatched = {
        name: (str(floor), str(pins.get(name)))
        for name, floor in floors.items()
        if pins.get(name) != floor
    }
    assert not mismatched, f"floor in pyproject.toml, pin in {PINS.name}: {mismatched}"


@pytest.mark.skipif(
    "FNRUN_NB_OLDEST" not in os.environ, reason="checks the environment of make test-oldest"
)
def test_the_pinned_versions_are_installed() -> None:
    installed = {name: Version(version(name)) for name in _pins()}
    wrong = {name: str(v) for name, v in installed.items() if v != _pins()[name]}
    assert not wrong, f"installed instead of the pins of {PINS.name}: {wrong}"
