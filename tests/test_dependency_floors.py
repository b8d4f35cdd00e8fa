"""pyproject.toml's version ranges say what was tested.

``constraints-min.txt`` pins every direct dependency at the lowest version that
``make test-min-versions`` tests; each pin must be exactly its range's lower bound, and
``constraints.txt`` (the newest tested pins, ``make setup``) must lie inside every range.
Reads the three files only: no package is imported or installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ranges() -> dict[str, Requirement]:
    """Every direct dependency: the project's and its 'dev' extra's (what 'make setup' installs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in requirements}


def pins(name: str) -> dict[str, Version]:
    result = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not a 'package==version' pin"
            result[canonicalize_name(package)] = Version(version)
    return result


def lower_bound(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    assert len(floors) == 1, f"{requirement}: a range needs exactly one lower bound (>=)"
    return floors[0]


def test_every_range_has_an_upper_bound():
    for name, requirement in ranges().items():
        assert any(s.operator in ("<", "<=") for s in requirement.specifier), f"{requirement}: no upper bound"


def test_min_constraints_pin_exactly_the_lower_bounds():
    floors = {name: lower_bound(requirement) for name, requirement in ranges().items()}
    tested = pins("constraints-min.txt")
    assert sorted(tested) == sorted(floors), "constraints-min.txt and pyproject.toml name different packages"
    wrong = {name: (str(floors[name]), str(tested[name])) for name in floors if floors[name] != tested[name]}
    assert not wrong, f"lower bound in pyproject.toml != pin in constraints-min.txt: {wrong}"


def test_tested_pins_lie_inside_the_ranges():
    newest = pins("constraints.txt")
    for name, requirement in ranges().items():
        assert name in newest, f"constraints.txt pins no {name}"
        assert requirement.specifier.contains(newest[name], prereleases=True), \
            f"constraints.txt pins {name}=={newest[name]}, outside {requirement}"
