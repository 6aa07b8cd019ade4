"""Bounds of the integers an API caller may send in a path or query.

Python integers are unbounded; the store's columns are not (64-bit keys, 32-bit versions on
PostgreSQL). An id beyond them used to reach the driver and come back as an OverflowError
(HTTP 500); bounded parameters are refused with 422 naming the parameter instead -- an
identifier that large cannot exist, so "not valid" is the honest answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

INT32_MAX = 2**31 - 1
"""Largest value of an ``integer`` column (policy versions)."""
INT64_MAX = 2**63 - 1
"""Largest value of a ``bigint`` column (queued request ids, audit sequence numbers)."""

RowId = Annotated[int, Path(ge=1, le=INT64_MAX, description="a row id (64-bit)")]
"""A 64-bit row id in a path: queued request ids, audit record numbers."""

__all__ = ["INT32_MAX", "INT64_MAX", "Query", "RowId"]
