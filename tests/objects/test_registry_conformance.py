"""Our definitions and our loader, checked against the OMA registry reference copy.

Every test here reads ../shared/reference/lwm2m-registry through the ``shared_dir`` fixture
and skips (saying so) when that folder is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lwm2m.model import DataType, ObjectDefinition, Operations
from objects import (
    BUILTIN,
    BUILTIN_MODEL,
    NotAnObjectDefinition,
    load_ddf,
    load_directory,
    load_model,
    scan_directory,
)
from objects.builtin import FLEET_CONFIG_OBJECT_ID

NOT_OBJECT_FILES = {
    "Common.xml": "reusable resources",
    "DDF.xml": "registry index",
    "LWM2M_senml_units.xml": "SenML units list",
    "LWM2M.xsd": "XML schema",
    "LWM2M-v1_1.xsd": "XML schema",
}
OMA_BUILTIN_IDS = [d.id for d in BUILTIN_MODEL if d.id != FLEET_CONFIG_OBJECT_ID]
NUMERIC_RANGE = re.compile(r"[\d\s.,-]*")


@pytest.fixture(scope="module")
def registry(shared_dir: Path) -> Path:
    path = shared_dir / "reference" / "lwm2m-registry"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def registry_definition(registry: Path, object_id: int) -> ObjectDefinition:
    [definition] = load_ddf(registry / f"{object_id}.xml")
    return definition


def test_every_registry_object_file_loads_as_the_object_its_name_says(registry: Path) -> None:
    object_files = [p for p in sorted(registry.iterdir()) if p.stem.isdigit()]
    assert len(object_files) >= 300  # the copy holds 327; guards against a vacuous pass
    wrong: list[str] = []
    for path in object_files:
        definitions = load_ddf(path)
        if [d.id for d in definitions] != [int(path.stem)]:
            wrong.append(f"{path.name}: {[d.id for d in definitions]}")
        for definition in definitions:
            if not definition.name or not definition.urn.startswith("urn:oma:lwm2m:"):
                wrong.append(f"{path.name}: name {definition.name!r} urn {definition.urn!r}")
    assert wrong == []


@pytest.mark.parametrize("file_name", sorted(NOT_OBJECT_FILES))
def test_registry_files_that_define_no_object_are_recognised_as_such(
    registry: Path, file_name: str
) -> None:
    with pytest.raises(NotAnObjectDefinition) as info:
        load_ddf(registry / file_name)
    assert info.value.source == str(registry / file_name)


def test_the_registry_copy_holds_nothing_but_objects_the_non_object_files_and_a_readme(
    registry: Path,
) -> None:
    others = {p.name for p in registry.iterdir() if not p.stem.isdigit()}
    assert others == {*NOT_OBJECT_FILES, "README.md"}


def test_a_registry_folder_loads_as_a_model_skipping_the_non_object_xml(registry: Path) -> None:
    scan = scan_directory(registry)
    assert len(scan.definitions) == sum(1 for p in registry.iterdir() if p.stem.isdigit())
    assert {p.name for p, _ in scan.skipped} == {"Common.xml", "DDF.xml", "LWM2M_senml_units.xml"}
    model = load_directory(registry)
    device = model.get(3)
    assert device is not None and device.name == "Device"


def test_loading_the_registry_over_the_builtins_reports_each_replaced_builtin(
    registry: Path,
) -> None:
    loaded = load_model([registry])
    assert sorted(o.object_id for o in loaded.overrides) == OMA_BUILTIN_IDS
    assert all(o.replaced_origin == BUILTIN for o in loaded.overrides)
    # we chose the newest version the registry has, so nothing is replaced by another version
    assert [o for o in loaded.overrides if o.version != o.replaced_version] == []
    assert loaded.origins[FLEET_CONFIG_OBJECT_ID] == BUILTIN


def test_loader_reads_the_registry_quirks_as_intended(registry: Path) -> None:
    security = registry_definition(registry, 0)
    # Security resources have no operations for a DM server: empty <Operations>
    assert all(r.operations is Operations.NONE for r in security.resources.values())
    assert security.resources[0].name == "LWM2M Server URI"  # "LWM2M  Server URI" in the file
    oscore = registry_definition(registry, 21)
    assert oscore.resources[6].name == "OSCORE ID Context"  # " OSCORE ID Context"
    device = registry_definition(registry, 3)
    assert device.resources[4].type is DataType.NONE and device.resources[4].operations.executable
    # 10482 declares a readable resource with an empty <Type>: read as Opaque
    plugin = registry_definition(registry, 10482)
    assert plugin.resources[5].type is DataType.OPAQUE


@pytest.mark.parametrize("object_id", OMA_BUILTIN_IDS)
def test_builtin_definition_agrees_with_the_registry(registry: Path, object_id: int) -> None:
    ours = BUILTIN_MODEL.get(object_id)
    assert ours is not None
    theirs = registry_definition(registry, object_id)
    header = ("id", "name", "multiple", "mandatory", "version", "lwm2m_version", "urn")
    assert {f: getattr(ours, f) for f in header} == {f: getattr(theirs, f) for f in header}
    assert list(ours.resources) == list(theirs.resources)
    for rid, mine in ours.resources.items():
        ref = theirs.resources[rid]
        fields = ("id", "name", "operations", "multiple", "mandatory", "type", "units")
        assert {f: getattr(mine, f) for f in fields} == {f: getattr(ref, f) for f in fields}
        if NUMERIC_RANGE.fullmatch(ref.range_enumeration):
            assert mine.range_enumeration == ref.range_enumeration, f"/{object_id}/*/{rid}"


def test_esim_iot_object_is_the_registry_3443(registry: Path) -> None:
    esim = registry_definition(registry, 3443)
    summary = {r.id: (r.name, r.operations.to_ddf(), r.type.value) for r in esim.resources.values()}
    assert summary == {
        0: ("State", "R", "Integer"),
        1: ("EID", "R", "String"),
        2: ("eIM message", "W", "Opaque"),
        3: ("IPA message", "R", "Opaque"),
        4: ("Clear IPA message", "E", "none"),
    }


def test_fleet_config_id_is_not_taken_in_the_registry(registry: Path) -> None:
    assert not (registry / f"{FLEET_CONFIG_OBJECT_ID}.xml").exists()
    assert load_directory(registry).get(FLEET_CONFIG_OBJECT_ID) is None
