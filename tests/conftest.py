"""Shared fixtures: where ../shared lives, and skips for when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder beside the clone; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a user's clone has no ../shared)")
    return SHARED


#: Test folders whose tests drive real `fleetloop serve` processes, simulated fleets or a
#: browser: under `pytest -n 2` they run one at a time on one worker (xdist_group + the
#: README's `--dist loadgroup`), so two of them never compete for the machine's two cores
#: (their kill -9 and fleet tests wait on real timers); the other worker runs the rest.
HEAVY = ("integration", "hardening", "console", "fleet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = REPO / "tests"
    for item in items:
        parts = item.path.relative_to(tests).parts if item.path.is_relative_to(tests) else ()
        if parts and parts[0] in HEAVY:
            item.add_marker(pytest.mark.xdist_group("serve"))
