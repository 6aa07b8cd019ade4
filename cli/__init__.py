"""The ``fleetloop`` command line (click)."""

__version__ = "0.1.0"
"""The package version, as pyproject.toml has it (tests/cli/test_import_cost.py keeps the two
equal). Kept here so ``fleetloop --version`` need not scan the installed distributions with
importlib.metadata (tens of milliseconds on every call)."""
