"""The eIM's operator surface against a real ``fleetloop serve`` (eIM on, ESipa over TLS on
127.0.0.1:0): eUICCs imported into the running server through the API and the CLI, PSMOs
queued, simulated IPAs fetching them over the HTTPS binding, and the signed results shown --
including a rollback, refused imports that write nothing, and the error envelope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.esim.https import HttpsIpa
from tests.integration.conftest import Api, run
from tests.sgp32.pki import make_pki
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    OLD_CARRIER,
    OLD_ICCID,
    EsimWorld,
    esim_serve,
    pem,
    poll,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-api")) as running:
        yield running


def _profiles(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["iccid"]: p for p in detail["profiles"]}


def test_import_queue_enable_and_show_the_signed_result(world: EsimWorld, tmp_path: Path) -> None:
    serve = world.serve
    good, good_ipa = world.device("11", 1)
    cli_euicc, cli_ipa = world.device("11", 2)
    stranded, stranded_ipa = world.device("11", 3, served={OLD_CARRIER}, rollback_after=0.3)

    # the CLI imports one eUICC from its PEM files, linked to a device
    euicc_pem, eum_pem = world.certs[cli_euicc.eid]
    (tmp_path / "euicc.pem").write_text(euicc_pem)
    (tmp_path / "eum.pem").write_text(eum_pem)
    done = serve.cli(
        "esim", "import", str(tmp_path / "euicc.pem"), "--eum", str(tmp_path / "eum.pem"),
        "--endpoint", "esim-api-2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert cli_euicc.eid in done.stdout and "esim-api-2" in done.stdout

    async def case() -> None:
        api = Api(serve)
        client = world.client()
        try:
            imported = await api.post(
                "/v1/esim/euiccs",
                {
                    "euiccs": [
                        world.import_item(good.eid, "esim-api-1"),
                        world.import_item(stranded.eid),
                    ]
                },
                expect=201,
            )
            assert [e["eid"] for e in imported["items"]] == [good.eid, stranded.eid]
            assert imported["items"][0]["endpoint"] == "esim-api-1"
            assert imported["items"][0]["counter_value"] == 0

            # the same certificate again: a no-op, not a conflict
            again = await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(good.eid)]}, expect=201
            )
            assert again["items"][0]["eid"] == good.eid

            listed = await api.get("/v1/esim/euiccs")
            eids = {e["eid"] for e in listed["items"]}
            assert {good.eid, cli_euicc.eid, stranded.eid} <= eids
            first = await api.get("/v1/esim/euiccs", params={"limit": 1})
            assert len(first["items"]) == 1 and first["next_cursor"] == first["items"][0]["eid"]
            rest = await api.get("/v1/esim/euiccs", params={"cursor": first["next_cursor"]})
            assert [first["items"][0]["eid"]] + [e["eid"] for e in rest["items"]] == sorted(eids)

            # enable over the API (by endpoint) and over the CLI (by EID)
            queued = await api.post(
                "/v1/esim/euiccs/esim-api-1/packages",
                {"operation": "enable", "iccid": NEW_ICCID},
                expect=201,
            )
            assert queued["state"] == "queued" and queued["counter_value"] == 1
            assert queued["operations"] == [{"op": "enable", "iccid": NEW_ICCID, "rollback": True}]
            await api.post(
                f"/v1/esim/euiccs/{stranded.eid}/packages",
                {"operation": "enable", "iccid": NEW_ICCID},
                expect=201,
            )
            shown = await api.get(f"/v1/esim/euiccs/{good.eid}")
            assert [p["counter_value"] for p in shown["queue"]] == [1]

            url = world.esipa_url
            ipas = [HttpsIpa(i, client, url) for i in (good_ipa, cli_ipa, stranded_ipa)]
            await poll(ipas[:2])
            assert good.enabled is not None and good.enabled.iccid == NEW_ICCID

            shown = await api.get("/v1/esim/euiccs/esim-api-1")
            assert shown["queue"] == []
            assert shown["enabled_iccid"] == NEW_ICCID
            profile = _profiles(shown)[NEW_ICCID]
            assert (profile["state"], profile["note"]) == ("enabled", "confirmed")
            package = shown["packages"][0]
            assert package["state"] == "done"
            assert package["result"]["kind"] == "euiccPackageResultSigned"
            assert package["result"]["results"] == [["enableResult", 0]]
            assert package["result"]["rolled_back"] is False
            results = await api.get(f"/v1/esim/euiccs/{good.eid}/results")
            assert results["items"][0]["outcome"] == "accepted"
            assert results["items"][0]["counter_value"] == 1

            # the stranded device: gets the package, loses connectivity, rolls back
            assert await ipas[2].exchange()
            assert stranded.enabled is not None and stranded.enabled.iccid == NEW_ICCID
            assert not await ipas[2].exchange()
            await asyncio.sleep(0.4)
            await poll(ipas[2:])
            assert stranded.enabled is not None and stranded.enabled.iccid == OLD_ICCID
            packages = await api.get(f"/v1/esim/euiccs/{stranded.eid}/packages")
            result = packages["items"][0]["result"]
            assert result["rolled_back"] is True
            assert result["results"] == [["enableResult", 0], ["rollbackResult", 0]]
            shown = await api.get(f"/v1/esim/euiccs/{stranded.eid}")
            assert _profiles(shown)[NEW_ICCID]["note"] == "rolled back"
            assert _profiles(shown)[NEW_ICCID]["state"] == "disabled"
        finally:
            await client.aclose()
            await api.aclose()

    run(case(), timeout=60)

    # CLI: queue listProfileInfo, let the IPA answer, show the profile list with carriers
    listed = serve.cli("esim", "list-profiles", cli_euicc.eid)
    assert listed.returncode == 0, listed.stderr

    async def answer() -> None:
        client = world.client()
        try:
            await poll([HttpsIpa(cli_ipa, client, world.esipa_url)])
        finally:
            await client.aclose()

    run(answer(), timeout=30)
    shown = serve.cli("esim", "show", "esim-api-2", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    carriers = {p["iccid"]: (p["carrier"], p["state"]) for p in detail["profiles"]}
    assert carriers == {OLD_ICCID: (OLD_CARRIER, "enabled"), NEW_ICCID: (NEW_CARRIER, "disabled")}
    enabled = serve.cli("esim", "enable", cli_euicc.eid, NEW_ICCID)
    assert enabled.returncode == 0 and "package #2" in enabled.stdout, enabled.stdout
    table = serve.cli("esim", "show", cli_euicc.eid)
    assert "queued   #2 enable (queued)" in table.stdout, table.stdout


def test_refusals_write_nothing_and_name_the_fix(world: EsimWorld, tmp_path: Path) -> None:
    serve = world.serve
    ok, _ = world.device("12", 1)
    foreign = make_pki(eid="89049032123451234512345678901235")  # another CI, and expired

    async def case() -> None:
        api = Api(serve)
        try:
            refused = await api.post(
                "/v1/esim/euiccs",
                {
                    "euiccs": [
                        world.import_item(ok.eid),
                        {
                            "euicc_certificate": pem(foreign.euicc),
                            "eum_certificate": pem(foreign.eum),
                        },
                    ]
                },
                expect=422,
            )
            assert refused["status"] == "invalid_input"
            assert refused["field"] == "euiccs[1]"
            assert "nothing of this import was written" in refused["message"]
            listed = await api.get("/v1/esim/euiccs")
            assert ok.eid not in {e["eid"] for e in listed["items"]}

            garbage = await api.post(
                "/v1/esim/euiccs",
                {"euiccs": [{"euicc_certificate": "not a cert", "eum_certificate": "x"}]},
                expect=422,
            )
            assert garbage["field"] == "euiccs[0].euicc_certificate"

            wrong_eid = dict(world.import_item(ok.eid), eid="89049032000000000000000000000000")
            refused = await api.post("/v1/esim/euiccs", {"euiccs": [wrong_eid]}, expect=422)
            assert refused["field"] == "euiccs[0]"

            missing = await api.post(
                "/v1/esim/euiccs/89049032000000000000000000000000/packages",
                {"operation": "enable", "iccid": NEW_ICCID},
                expect=404,
            )
            assert missing["status"] == "not_found" and "fleetloop esim list" in missing["message"]

            await api.post("/v1/esim/euiccs", {"euiccs": [world.import_item(ok.eid)]}, expect=201)
            no_iccid = await api.post(
                f"/v1/esim/euiccs/{ok.eid}/packages", {"operation": "disable"}, expect=422
            )
            assert no_iccid["field"] == "iccid"
            bad = await api.post(
                f"/v1/esim/euiccs/{ok.eid}/packages",
                {"operation": "reboot", "iccid": NEW_ICCID},
                expect=422,
            )
            assert bad["field"] == "body.operation"
            no_code = await api.post(
                f"/v1/esim/euiccs/{ok.eid}/packages", {"operation": "download"}, expect=422
            )
            assert no_code["field"] == "activation_code"
            bad_code = await api.post(
                f"/v1/esim/euiccs/{ok.eid}/packages",
                {"operation": "download", "activation_code": "LPA:1$smdp"},
                expect=422,
            )
            assert "1$SM-DP+ address$matching ID" in bad_code["message"]
            shown = await api.get(f"/v1/esim/euiccs/{ok.eid}")
            assert shown["queue"] == [] and shown["counter_value"] == 0  # nothing was signed
            trigger = await api.post(
                f"/v1/esim/euiccs/{ok.eid}/packages",
                {"operation": "download", "activation_code": "1$smdp.example.com$ORDER-1"},
                expect=201,
            )
            assert trigger["operations"][0]["op"] == "profileDownloadTrigger"
        finally:
            await api.aclose()

    run(case(), timeout=30)
    missing = serve.cli("esim", "show", "no-such-device")
    assert missing.returncode == 1 and "no eUICC 'no-such-device'" in missing.stderr
    usage = serve.cli("esim", "import")
    assert usage.returncode == 2
    fallback = serve.cli("esim", "fallback", ok.eid, OLD_ICCID)
    assert fallback.returncode == 0 and "set-fallback" in fallback.stdout, fallback.stderr
    assert serve.cli("esim", "fallback", ok.eid).returncode == 2


def test_roles_and_tenants_as_on_every_route(world: EsimWorld) -> None:
    """GET is a viewer's, POST an operator's; an eUICC of another tenant answers exactly what
    an unknown one answers, and a tenant token imports into its own tenant."""
    acme, _ = world.device("13", 1)
    other, _ = world.device("13", 2)

    async def case() -> None:
        api = Api(world.serve)
        try:
            await api.post(
                "/v1/esim/euiccs",
                {"euiccs": [world.import_item(other.eid)], "tenant": "globex"},
                expect=201,
            )
            tokens = {}
            for name, role, tenants in (
                ("esim-viewer", "viewer", None),
                ("esim-acme", "operator", ["acme"]),
            ):
                made = await api.post(
                    "/v1/tokens", {"name": name, "role": role, "tenants": tenants}, expect=201
                )
                tokens[name] = made["token"]
            viewer = httpx.AsyncClient(
                base_url=world.serve.url,
                headers={"Authorization": f"Bearer {tokens['esim-viewer']}"},
            )
            tenant = httpx.AsyncClient(
                base_url=world.serve.url,
                headers={"Authorization": f"Bearer {tokens['esim-acme']}"},
            )
            try:
                assert (await viewer.get("/v1/esim/euiccs")).status_code == 200
                refused = await viewer.post(
                    f"/v1/esim/euiccs/{other.eid}/packages", json={"operation": "list-profiles"}
                )
                assert refused.status_code == 403 and refused.json()["status"] == "forbidden"

                imported = await tenant.post(
                    "/v1/esim/euiccs", json={"euiccs": [world.import_item(acme.eid)]}
                )
                assert imported.status_code == 201
                assert imported.json()["items"][0]["tenant"] == "acme"
                listed = (await tenant.get("/v1/esim/euiccs")).json()["items"]
                assert [e["eid"] for e in listed] == [acme.eid]
                hidden = await tenant.get(f"/v1/esim/euiccs/{other.eid}")
                unknown = await tenant.get("/v1/esim/euiccs/89049032000000000000000000000000")
                assert hidden.status_code == unknown.status_code == 404
                assert hidden.json()["status"] == unknown.json()["status"] == "not_found"
            finally:
                await viewer.aclose()
                await tenant.aclose()
        finally:
            await api.aclose()

    run(case(), timeout=30)
