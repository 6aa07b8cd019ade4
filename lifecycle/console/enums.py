"""The names of enumerated resource values, for the console (``/console/enums.json``).

The API's Read results carry resource *names* but leave integer codes as numbers (a script
wants the number). An operator wants "normal", not 0, for Battery Status. The enums already
live in :mod:`objects.enums`, each documented with the resource it decodes (``/3/0/20
Battery Status ...``); this module reads those docstrings, so a new enum there shows by name
in the console without a second table to keep in step.
"""

from __future__ import annotations

import enum
import inspect
import re
from typing import Any

import objects.enums

_RESOURCE = re.compile(r"/(\d+)/(?:\d+|x)/(\d+)")


def label(member: enum.Enum) -> str:
    """``CHARGE_COMPLETE`` -> ``charge complete``: how the console prints a code."""
    return member.name.lower().replace("_", " ")


def _enums() -> list[type[enum.IntEnum]]:
    return [
        value
        for value in vars(objects.enums).values()
        if inspect.isclass(value)
        and issubclass(value, enum.IntEnum)
        and value.__module__ == objects.enums.__name__
    ]


def enum_table() -> dict[str, Any]:
    """``{"3/20": {"name": "BatteryStatus", "values": {"0": "normal", ...}}, ...}``.

    Keyed by ``object/resource`` (any instance): the resources named at the start of each
    enum's docstring, before its first ``:``, ``;`` or ``(``. An enum decoding several
    resources (/4/0/0 and /4/0/1) is listed under each of them."""
    table: dict[str, Any] = {}
    for kind in _enums():
        first_line = (kind.__doc__ or "").strip().splitlines()[0] if kind.__doc__ else ""
        subject = re.split(r"[:;(]", first_line, maxsplit=1)[0]  # "/3443/0/0 State: ..."
        values = {str(int(member)): label(member) for member in kind}
        for object_id, resource_id in _RESOURCE.findall(subject):
            table.setdefault(
                f"{object_id}/{resource_id}", {"name": kind.__name__, "values": values}
            )
    return table


__all__ = ["enum_table", "label"]
