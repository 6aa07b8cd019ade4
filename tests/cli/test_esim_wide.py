"""``-o wide`` on the eSIM lists, against ``fleetloop serve`` with the eIM on (every port
ephemeral on 127.0.0.1): one eUICC imported and enabled through the CLI, its IPA polled, then
``esim list``, ``esim eims``, ``esim packages`` and ``esim results`` in wide form show what
their JSON holds (eimTransactionId, counter, state, times)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from simulators.esim.https import HttpsIpa
from tests.integration.conftest import run
from tests.sgp32.serve_world import NEW_ICCID, EsimWorld, esim_serve, poll

pytestmark = pytest.mark.integration

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-wide")) as running:
        yield running


def cli(world: EsimWorld, *args: str) -> str:
    done = world.serve.cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def rows(text: str) -> tuple[list[str], list[list[str]]]:
    """A table's header cells and row cells (cells are split on two or more spaces)."""
    head, *body = text.splitlines()
    return re.split(r"\s{2,}", head.strip()), [re.split(r"\s{2,}", r.strip()) for r in body]


def cell(header: list[str], row: list[str], name: str) -> str:
    return row[header.index(name)]


def test_wide_esim_lists_show_ids_counters_states_and_times(
    world: EsimWorld, tmp_path: Path
) -> None:
    euicc, ipa = world.device("31", 1)
    euicc_pem, eum_pem = world.certs[euicc.eid]
    (tmp_path / "euicc.pem").write_text(euicc_pem)
    (tmp_path / "eum.pem").write_text(eum_pem)
    cli(world, "esim", "import", str(tmp_path / "euicc.pem"), "--eum", str(tmp_path / "eum.pem"))
    # nothing queued yet: a message naming the eUICC and what to do, not an empty table
    assert cli(world, "esim", "packages", euicc.eid, "-o", "wide").startswith(
        f"no packages for eUICC {euicc.eid}; queue one with `fleetloop esim list-profiles"
    )
    assert cli(world, "esim", "results", euicc.eid).startswith(
        f"no results from eUICC {euicc.eid} yet"
    )
    assert cli(world, "esim", "list", "--eim-id", "eim.nowhere").startswith(
        "no eUICCs bound to eIM eim.nowhere; import them with `fleetloop esim import"
    )
    cli(world, "esim", "enable", euicc.eid, NEW_ICCID)

    async def answer() -> None:
        client = world.client()
        try:
            await poll([HttpsIpa(ipa, client, world.esipa_url)])
        finally:
            await client.aclose()

    run(answer(), timeout=30)

    narrow, _ = rows(cli(world, "esim", "list"))
    header, found = rows(cli(world, "esim", "list", "-o", "wide"))
    assert header == [*narrow, "COUNTER", "TENANT", "REGISTERED"]
    mine = next(r for r in found if r[0] == euicc.eid)
    assert cell(header, mine, "COUNTER") == "1"  # the enable used counterValue 1
    assert cell(header, mine, "ENABLED") == NEW_ICCID

    package = json.loads(cli(world, "esim", "packages", euicc.eid, "-o", "json"))["items"][0]
    narrow, _ = rows(cli(world, "esim", "packages", euicc.eid))
    header, found = rows(cli(world, "esim", "packages", euicc.eid, "-o", "wide"))
    assert header[: len(narrow)] == narrow and len(header) > len(narrow)
    (row,) = found
    assert cell(header, row, "#") == "1" and cell(header, row, "STATE") == "done"
    assert cell(header, row, "EID") == euicc.eid
    assert cell(header, row, "EIMTRANSACTIONID") == package["transaction_id"]
    for name in ("QUEUED", "DELIVERED", "ANSWERED"):
        assert ISO.match(cell(header, row, name)), (name, row)

    header, found = rows(cli(world, "esim", "results", euicc.eid, "-o", "wide"))
    assert header[-2:] == ["RECEIVED AT", "EIMTRANSACTIONID"]
    assert found[0][-1] == package["transaction_id"] and ISO.match(found[0][-2])

    header, found = rows(cli(world, "esim", "eims", "-o", "wide"))
    assert header[-1] == "KEY SHA-256"
    spki = world.eim_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert [r[-1] for r in found] == [hashlib.sha256(spki).hexdigest()]
