"""The object store on its own: copy-on-write over a shared template, the local API, execute
arguments, and the rule that the device core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path as FsPath

import pytest

from lwm2m.model import Path
from simulators.device.defaults import default_template
from simulators.device.errors import BadRequest, NotFound
from simulators.device.execute import Arguments, format_arguments, parse_arguments
from simulators.device.objects import ObjectStore
from tests.conftest import REPO


def store(endpoint: str = "sim-1") -> ObjectStore:
    return ObjectStore(default_template(), endpoint, clock_offset=1000.0)


def test_devices_of_one_model_share_the_template_and_store_nothing_while_idle() -> None:
    a, b = store("a"), store("b")
    assert a.template is b.template is default_template()
    for path in ("/3/0", "/1/0", "/4/0", "/5/0", "/32001/0"):
        a.read(Path.parse(path), 5.0)
    assert a._values is None and a._instances is None
    assert (a.get("/3/0/2"), b.get("/3/0/2")) == ("a", "b")  # computed, not stored


def test_a_value_set_back_to_its_default_is_no_longer_stored() -> None:
    s = store()
    s.set("/3/0/9", 40)
    assert s._values == {(3, 0, 9): 40}
    s.set("/3/0/9", 95)
    assert s._values is None
    s.set("/3/0/7", {0: 3800, 1: 5000})  # the default again
    assert s._values is None


def test_multiple_resources_and_their_instances() -> None:
    s = store()
    s.set("/3/0/11", {0: 1, 1: 4})
    s.set("/3/0/11/2", 5)
    assert s.get("/3/0/11") == {0: 1, 1: 4, 2: 5}
    assert s.get("/3/0/11/1") == 4
    with pytest.raises(ValueError, match="multiple"):
        s.set("/3/0/11", 3)


def test_writing_the_current_time_shifts_the_clock_by_a_stored_offset() -> None:
    s = store()
    assert s.get("/3/0/13", 10.0) == 1010
    s.set("/3/0/13", 5000, 10.0)
    assert s.get("/3/0/13", 20.0) == 5010
    assert s._values == {(3, 0, 13): 3990}


def test_set_checks_existence_and_type() -> None:
    s = store()
    with pytest.raises(NotFound):
        s.set("/3/0/22", "x")  # not implemented by this device
    with pytest.raises(NotFound):
        s.set("/9/0/0", "x")
    with pytest.raises(BadRequest):
        s.set("/3/0/9", "ninety")


def test_instances_come_and_go_and_the_template_stays_untouched() -> None:
    s = store()
    changes: list[tuple[int, ...]] = []
    s.listener = lambda ids, now: changes.append(ids)
    s.delete_instance(3443, 0)
    assert s.instance_ids(3443) == ()
    assert default_template().objects[3443].instances.keys() == {0}
    original = default_template().objects[3443].instances[0]
    iid = s.create_instance(3443, values={1: "89" + "0" * 30}, template=original)
    assert iid == 0 and s.get("/3443/0/1") == "89" + "0" * 30
    assert s._instances is None  # the instance list is the template's again
    assert changes == [(3443,), (3443,)]
    s.set("/3/0/9", 1)
    assert changes[-1] == (3, 0, 9)


def test_reset_returns_to_the_template() -> None:
    s = store()
    s.set("/3/0/9", 1)
    s.delete_instance(3443, 0)
    s.reset()
    assert s.get("/3/0/9") == 95 and s.instance_ids(3443) == (0,)


@pytest.mark.parametrize(
    ("payload", "items"),
    [
        (b"", ()),
        (b"0", ((0, None),)),
        (b"0='2024.06.1',1", ((0, "2024.06.1"), (1, None))),
        (b"3='a, b',5=''", ((3, "a, b"), (5, ""))),
    ],
)
def test_execute_arguments_parse(payload: bytes, items: tuple[tuple[int, str | None], ...]) -> None:
    args = parse_arguments(payload)
    assert args == Arguments(items, payload.decode())
    assert format_arguments(items) == payload


@pytest.mark.parametrize("payload", [b"x", b"10", b"0=", b"0='a", b"0,", b"0;1", b"\xff", b"1,1"])
def test_execute_arguments_refuse_malformed_lists(payload: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_arguments(payload)


FORBIDDEN = {"asyncio", "socket", "time", "random", "threading", "selectors", "select"}


def test_the_device_core_imports_no_io_clock_or_randomness() -> None:
    """The sans-IO rule of docs/SIMULATOR.md: time comes in as ``now``, randomness injected."""
    for file in sorted((REPO / "simulators" / "device").glob("*.py")):
        tree = ast.parse(FsPath(file).read_text(), filename=str(file))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{file.name} imports {name}"
