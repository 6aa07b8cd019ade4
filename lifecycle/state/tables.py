"""Tables of desired and reported state per device and dimension, and the named config bundles.

``lc_desired`` holds what an operator wants (one row per endpoint and dimension, with the
generation that grows on every change of value and the policy); ``lc_reported`` what the
device last reported, with ``observed_generation`` -- the desired generation it was last
verified to run (the generation rule, :mod:`lifecycle.state.dimensions`) -- and
``failed_generation`` when the device refused a generation for good. Values are JSON text.
``lc_config_bundle`` is the small named-bundle registry behind ``config=NAME`` (the full
artifact repository with overlays and diffs is the campaigns issue).
"""

from __future__ import annotations

from sqlalchemy import Double, Index, LargeBinary, Text
from sqlmodel import Field

from lifecycle.tables import LifecycleModel, table_of


class DesiredStateRow(LifecycleModel, table=True):
    """The desired value of one dimension of one device."""

    __tablename__ = "lc_desired"
    __table_args__ = (Index("ix_lc_desired_dimension", "dimension"),)

    endpoint: str = Field(primary_key=True)
    dimension: str = Field(primary_key=True)
    value: str = Field(sa_type=Text)  # JSON
    generation: int
    policy: str = "enforce"
    set_by: str
    set_at: float = Field(sa_type=Double)


class ReportedStateRow(LifecycleModel, table=True):
    """The reported value of one dimension of one device and what was verified of it."""

    __tablename__ = "lc_reported"

    endpoint: str = Field(primary_key=True)
    dimension: str = Field(primary_key=True)
    value: str | None = Field(default=None, sa_type=Text)  # JSON, None: nothing reported
    observed_generation: int | None = None
    failed_generation: int | None = None
    detail: str = Field(default="", sa_type=Text)
    reported_at: float = Field(sa_type=Double)
    source: str


class ConfigBundleRow(LifecycleModel, table=True):
    """A named config bundle: immutable content (CBOR map) and its SHA-256."""

    __tablename__ = "lc_config_bundle"

    name: str = Field(primary_key=True)
    content: bytes = Field(sa_type=LargeBinary)
    digest: str
    created_by: str
    created_at: float = Field(sa_type=Double)


DESIRED = table_of(DesiredStateRow)
REPORTED = table_of(ReportedStateRow)
CONFIG_BUNDLE = table_of(ConfigBundleRow)

__all__ = [
    "CONFIG_BUNDLE",
    "DESIRED",
    "REPORTED",
    "ConfigBundleRow",
    "DesiredStateRow",
    "ReportedStateRow",
]
