"""A device's UTC offset for maintenance windows, from its inventory country (sans-IO).

The inventory has no time zone column; a country is what it knows. This is a small table of
standard-time offsets (minutes east of UTC) for the countries a fleet commonly spans, one
offset per country -- for countries with several zones (US, RU, BR, AU, CA, MX, ...) the
most populous zone's. Daylight saving time is ignored: a window is a coarse "at night, local
time" guard, not a schedule to the minute. An unknown or missing country is UTC (None, which
:func:`lifecycle.campaigns.plan.in_window` treats as offset 0).
"""

from __future__ import annotations

OFFSETS: dict[str, int] = {
    "GB": 0, "IE": 0, "PT": 0, "IS": 0,
    "DE": 60, "FR": 60, "ES": 60, "IT": 60, "NL": 60, "BE": 60, "AT": 60, "CH": 60,
    "SE": 60, "NO": 60, "DK": 60, "PL": 60, "CZ": 60, "HU": 60, "LU": 60,
    "FI": 120, "GR": 120, "RO": 120, "BG": 120, "UA": 120, "ZA": 120, "EG": 120, "IL": 120,
    "TR": 180, "RU": 180, "SA": 180, "KE": 180,
    "AE": 240, "IN": 330, "PK": 300, "BD": 360, "TH": 420, "VN": 420, "ID": 420,
    "CN": 480, "SG": 480, "MY": 480, "PH": 480, "HK": 480, "TW": 480, "AU": 600,
    "JP": 540, "KR": 540, "NZ": 720,
    "US": -300, "CA": -300, "MX": -360, "BR": -180, "AR": -180, "CL": -240, "CO": -300,
    "PE": -300,
}  # fmt: skip


def utc_offset(country: str | None) -> int | None:
    """Minutes east of UTC for ``country`` (ISO 3166 alpha-2), None when unknown."""
    if not country:
        return None
    return OFFSETS.get(country.strip().upper())


__all__ = ["OFFSETS", "utc_offset"]
