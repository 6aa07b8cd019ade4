"""Object definitions: the built-in objects fleetloop uses, DDF loading, typed codes.

Codecs and the server take an :class:`lwm2m.model.ObjectModel`; this package provides the one
fleetloop runs with. :data:`BUILTIN_MODEL` holds our own definitions of the objects fleetloop
manages; :func:`load_model` adds the objects an operator supplies as DDF XML folders.

Precedence, lowest to highest: built-ins, then each folder in the order given. A folder may
replace a built-in OMA object (say, with a newer version the operator's devices implement); the
result lists every such replacement in :attr:`LoadedModel.overrides` so the caller can log it.
fleetloop's own objects (the Fleetloop Config object) cannot be replaced: server logic depends
on their exact resource ids, so :func:`load_model` raises :class:`ModelConflict` instead.

Pure data and parsing: no asyncio, sockets or database here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from lwm2m.model import ObjectDefinition, StaticModel
from objects.builtin import BUILTIN_DEFINITIONS, FLEET_CONFIG_OBJECT_ID
from objects.ddf import (
    DirectoryScan,
    dump_ddf,
    load_ddf,
    load_directory,
    parse_ddf,
    scan_directory,
)
from objects.errors import (
    DdfError,
    InvalidBinding,
    ModelConflict,
    NotAnObjectDefinition,
    ObjectsError,
    UnknownObject,
)

BUILTIN_MODEL = StaticModel(BUILTIN_DEFINITIONS)
"""Every built-in definition: objects 0, 1, 2, 3, 4, 5, 7, 10, 11, 21, 3443 and 32001."""

PROTECTED_OBJECT_IDS = frozenset({FLEET_CONFIG_OBJECT_ID})
"""Objects fleetloop defines itself; operator DDF files may not replace them."""

BUILTIN = "builtin"
"""The origin :attr:`LoadedModel.origins` gives a built-in definition."""


def builtin_definition(object_id: int) -> ObjectDefinition:
    """The built-in definition of ``object_id``; :class:`UnknownObject` if there is none."""
    definition = BUILTIN_MODEL.get(object_id)
    if definition is None:
        known = ", ".join(str(d.id) for d in BUILTIN_MODEL)
        raise UnknownObject(f"no built-in definition for object {object_id} (built-in: {known})")
    return definition


@dataclass(frozen=True, slots=True)
class Override:
    """A definition from a DDF folder that replaced an earlier one with the same id."""

    object_id: int
    replaced_origin: str
    replaced_version: str
    origin: str
    version: str


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """The assembled model and how it came together (for logs and ``fleetloop`` diagnostics).

    It is itself an :class:`~lwm2m.model.ObjectModel`, so it can be handed to codecs as is.
    """

    model: StaticModel
    origins: Mapping[int, str]
    overrides: tuple[Override, ...]
    skipped: tuple[tuple[Path, str], ...]

    def get(self, object_id: int) -> ObjectDefinition | None:
        return self.model.get(object_id)


def load_model(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> LoadedModel:
    """Built-ins plus the DDF files in ``extra_dirs`` (later folders win; see module doc)."""
    definitions = {d.id: d for d in BUILTIN_DEFINITIONS}
    origins = dict.fromkeys(definitions, BUILTIN)
    overrides: list[Override] = []
    skipped: list[tuple[Path, str]] = []
    for directory in extra_dirs:
        scan: DirectoryScan = scan_directory(directory)
        skipped.extend(scan.skipped)
        for definition in scan.definitions:
            origin = str(scan.origins[definition.id])
            if definition.id in PROTECTED_OBJECT_IDS:
                raise ModelConflict(
                    f"{origin} defines object {definition.id}, which is fleetloop's own "
                    f"{definitions[definition.id].name!r} object and cannot be replaced; "
                    "remove the file (or renumber that object)"
                )
            previous = definitions.get(definition.id)
            if previous is not None:
                overrides.append(
                    Override(
                        definition.id,
                        origins[definition.id],
                        previous.version,
                        origin,
                        definition.version,
                    )
                )
            definitions[definition.id] = definition
            origins[definition.id] = origin
    return LoadedModel(
        StaticModel(definitions.values()),
        MappingProxyType(origins),
        tuple(overrides),
        tuple(skipped),
    )


__all__ = [
    "BUILTIN",
    "BUILTIN_DEFINITIONS",
    "BUILTIN_MODEL",
    "PROTECTED_OBJECT_IDS",
    "DdfError",
    "DirectoryScan",
    "InvalidBinding",
    "LoadedModel",
    "ModelConflict",
    "NotAnObjectDefinition",
    "ObjectsError",
    "Override",
    "UnknownObject",
    "builtin_definition",
    "dump_ddf",
    "load_ddf",
    "load_directory",
    "load_model",
    "parse_ddf",
    "scan_directory",
]
