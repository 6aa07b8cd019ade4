"""The built-in definitions: shape, conventions, the config object's design, model lookup."""

from __future__ import annotations

import re

import pytest

from lwm2m.model import DataType, ObjectDefinition, Operations
from objects import (
    BUILTIN_MODEL,
    PROTECTED_OBJECT_IDS,
    UnknownObject,
    builtin_definition,
    dump_ddf,
    load_ddf,
)
from objects.builtin import (
    BUILTIN_DEFINITIONS,
    FLEET_CONFIG,
    FLEET_CONFIG_OBJECT_ID,
    FleetConfigResource,
    FleetConfigResult,
)
from objects.builtin._dsl import MANDATORY, SINGLE, STRING, obj, res

ALL = list(BUILTIN_MODEL)


def test_builtin_model_holds_exactly_the_objects_fleetloop_manages() -> None:
    assert [d.id for d in BUILTIN_MODEL] == [0, 1, 2, 3, 4, 5, 7, 10, 11, 21, 3443, 32001]
    assert len(BUILTIN_DEFINITIONS) == len(BUILTIN_MODEL)  # no id declared twice


def test_builtin_definition_finds_known_ids_and_names_unknown_ones() -> None:
    assert builtin_definition(3).name == "Device"
    assert builtin_definition(FLEET_CONFIG_OBJECT_ID) is FLEET_CONFIG
    with pytest.raises(UnknownObject, match="object 6 "):
        builtin_definition(6)
    with pytest.raises(LookupError):
        builtin_definition(65534)


@pytest.mark.parametrize("definition", ALL, ids=lambda d: f"{d.id}")
def test_definitions_follow_the_conventions(definition: ObjectDefinition) -> None:
    assert re.fullmatch(r"urn:oma:lwm2m:(oma|ext|x):\d+(:\d+\.\d+)?", definition.urn)
    assert definition.urn.split(":")[4] == str(definition.id)
    assert definition.description and "\n" not in definition.description
    for resource in definition.resources.values():
        where = f"/{definition.id}/*/{resource.id} {resource.name}"
        assert resource.operations.executable == (resource.type is DataType.NONE), where
        assert resource.description, where
        assert "\n" not in resource.description and len(resource.description) <= 90, where
        assert resource.name == resource.name.strip(), where


def test_every_builtin_survives_a_ddf_round_trip() -> None:
    assert load_ddf(dump_ddf(ALL)) == ALL


def test_the_notation_rejects_typed_executables_and_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="executable"):
        res(0, "Reboot", "E", SINGLE, MANDATORY, STRING, "typed executable")
    row = res(0, "Name", "R", SINGLE, MANDATORY, STRING, "a name")
    with pytest.raises(ValueError, match="twice"):
        obj(
            40000,
            "Dup",
            "dup",
            version="1.0",
            lwm2m="1.1",
            instances=SINGLE,
            presence=MANDATORY,
            resources=[row, row],
        )


# -- the Fleetloop Config object ------------------------------------------------------------


def test_config_object_id_lies_in_the_private_x_range() -> None:
    assert 26241 <= FLEET_CONFIG_OBJECT_ID <= 32768
    assert FLEET_CONFIG.urn == f"urn:oma:lwm2m:x:{FLEET_CONFIG_OBJECT_ID}"
    assert FLEET_CONFIG_OBJECT_ID in PROTECTED_OBJECT_IDS


def test_config_resource_enum_names_every_resource() -> None:
    by_enum = {r.value: r.name for r in FleetConfigResource}
    by_definition = {
        r.id: re.sub(r"\W+", "_", r.name).upper() for r in FLEET_CONFIG.resources.values()
    }
    assert by_enum == by_definition


def test_config_object_supports_write_verify_apply_observe_rollback() -> None:
    r = {FleetConfigResource(i): d for i, d in FLEET_CONFIG.resources.items()}
    # the bundle is written, never read back (it may hold credentials)
    assert r[FleetConfigResource.BUNDLE].operations is Operations.W
    assert r[FleetConfigResource.BUNDLE].type is DataType.OPAQUE
    digest = r[FleetConfigResource.BUNDLE_DIGEST]
    assert digest.type is DataType.OPAQUE and digest.range_enumeration == "32"  # SHA-256
    assert r[FleetConfigResource.CONFIG_VERSION].operations is Operations.RW
    for executable in (FleetConfigResource.APPLY, FleetConfigResource.ROLLBACK):
        assert r[executable].operations is Operations.E
    # what the server observes to confirm a rollout is read-only and device-owned
    for reported in (
        FleetConfigResource.APPLIED_VERSION,
        FleetConfigResource.APPLY_RESULT,
        FleetConfigResource.PREVIOUS_VERSION,
        FleetConfigResource.LAST_APPLIED_TIME,
    ):
        assert r[reported].operations is Operations.R
    assert r[FleetConfigResource.LAST_APPLIED_TIME].type is DataType.TIME
    flags = r[FleetConfigResource.FEATURE_FLAGS]
    assert flags.multiple and flags.type is DataType.STRING
    assert r[FleetConfigResource.REPORTING_INTERVAL].type is DataType.UNSIGNED_INTEGER
    mandatory = {FleetConfigResource(d.id) for d in FLEET_CONFIG.resources.values() if d.mandatory}
    assert mandatory == {
        FleetConfigResource.CONFIG_VERSION,
        FleetConfigResource.BUNDLE,
        FleetConfigResource.BUNDLE_DIGEST,
        FleetConfigResource.APPLY,
        FleetConfigResource.APPLIED_VERSION,
        FleetConfigResource.APPLY_RESULT,
    }


def test_apply_result_range_covers_exactly_the_result_codes() -> None:
    declared = FLEET_CONFIG.resources[FleetConfigResource.APPLY_RESULT].range_enumeration
    low, high = map(int, declared.split(".."))
    assert set(range(low, high + 1)) == {int(c) for c in FleetConfigResult}


def test_result_codes_classify_the_rollout_outcome() -> None:
    pending = {c for c in FleetConfigResult if not c.is_final}
    assert pending == {FleetConfigResult.IDLE, FleetConfigResult.APPLYING}
    failures = {c for c in FleetConfigResult if c.is_failure}
    assert failures == {
        FleetConfigResult.REJECTED_INVALID,
        FleetConfigResult.REJECTED_DIGEST_MISMATCH,
        FleetConfigResult.FAILED_APPLY,
        FleetConfigResult.ROLLED_BACK,
        FleetConfigResult.REJECTED_VERSION_MISMATCH,
    }
    assert [c for c in FleetConfigResult if c.config_changed] == [FleetConfigResult.APPLIED]
    assert not FleetConfigResult.VALIDATED.is_failure and FleetConfigResult.VALIDATED.is_final
