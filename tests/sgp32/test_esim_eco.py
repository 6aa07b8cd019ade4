"""Several eIM identities in one deployment and eIM Configuration Operations (eCO) through
the API and CLI, against a real ``fleetloop serve``:

* ``--eim-identities`` adds a second eIM (its own key and certificate); an eUICC imported
  with ``eim_id`` is bound to it and its packages are signed with *its* key -- the simulated
  eUICC, which only trusts that eIM, verifies them and its signed result is accepted;
* ``GET /v1/esim/eims`` / ``fleetloop esim eims`` list the identities with their eUICCs,
  ``GET /v1/esim/euiccs?eim_id=`` / ``fleetloop esim list --eim-id`` select by binding;
* addEim (the second eIM's certificate filled in by the server), updateEim, listEim and
  deleteEim queued for a selection (``POST /v1/esim/packages``) and through
  ``fleetloop esim eim ...``: the eUICCs execute them, their signed results are verified,
  recorded and audited.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.esim.euicc import EimAssociation
from simulators.esim.https import HttpsIpa
from tests.integration.conftest import Api, run
from tests.sgp32.serve_world import EIM_ID, EsimFiles, start_serve, stop_serve

pytestmark = pytest.mark.integration

EIM_TWO = "eim-two.fleetloop.test"


def second_eim(folder: Path) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key, a self-signed certificate and the --eim-identities file naming them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EIM_TWO)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (folder / "eim-two.key").write_bytes(pem_key)
    (folder / "eim-two.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path = folder / "eims.json"
    entry = {"eim_id": EIM_TWO, "key": "eim-two.key", "certificate": "eim-two.pem"}
    path.write_text(json.dumps([entry]))
    return path, key, cert


def test_two_eim_identities_and_ecos_through_api_and_cli(tmp_path: Path) -> None:
    files = EsimFiles.make(tmp_path / "esim-eco")
    identities, key_two, cert_two = second_eim(files.folder)
    world = start_serve(files, ["--eim-identities", str(identities)])
    first, ipa_first = world.device("84", 1)
    second, ipa_second = world.device("84", 2)
    second.eims = {EIM_TWO: EimAssociation(EIM_TWO, key_two.public_key())}  # only eIM two

    async def case() -> dict[str, Any]:
        api = Api(world.serve)
        client = world.client()
        remotes = [HttpsIpa(i, client, world.esipa_url) for i in (ipa_first, ipa_second)]
        try:
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(first.eid)]}, expect=201
            )
            body = {"euiccs": [world.import_item(second.eid)], "eim_id": EIM_TWO}
            imported = await api.post("/v1/esim/euiccs", body, expect=201)
            assert imported["items"][0]["eim_id"] == EIM_TWO
            body = {"euiccs": [world.import_item(second.eid)], "eim_id": "eim.unknown"}
            refused = await api.post("/v1/esim/euiccs", body, expect=422)
            assert "eim.unknown" in refused["message"]

            eims = {i["eim_id"]: i for i in (await api.get("/v1/esim/eims"))["items"]}
            assert eims[EIM_ID]["default"] and eims[EIM_ID]["euiccs"] == 1
            assert eims[EIM_TWO]["euiccs"] == 1 and not eims[EIM_TWO]["default"]
            assert (
                eims[EIM_TWO]["certificate"]
                == cert_two.public_bytes(serialization.Encoding.PEM).decode()
            )
            bound = await api.get("/v1/esim/euiccs", params={"eim_id": EIM_TWO})
            assert [e["eid"] for e in bound["items"]] == [second.eid]

            # a package for the second eUICC is signed by eIM two: the eUICC accepts it
            await api.post(
                f"/v1/esim/euiccs/{second.eid}/packages", {"operation": "list-eim"}, expect=201
            )
            # addEim of eIM two for every eUICC bound to the first eIM (a selection)
            added = await api.post(
                "/v1/esim/packages",
                {"operation": "add-eim", "eim": {"eim_id": EIM_TWO}, "bound_to": EIM_ID},
                expect=201,
            )
            assert [p["eid"] for p in added["items"]] == [first.eid]
            for remote in remotes:
                await remote.settle()
            assert ipa_second.refused == [] and ipa_first.refused == []
            association = first.eims[EIM_TWO]
            assert association.public_key == key_two.public_key()

            await api.post(
                "/v1/esim/packages",
                {
                    "operation": "update-eim",
                    "eim": {"eim_id": EIM_TWO, "counter_value": 5},
                    "eids": [first.eid],
                },
                expect=201,
            )
            await remotes[0].settle()
            assert first.eims[EIM_TWO].counter_value == 5
            return {
                "first": await api.get(f"/v1/esim/euiccs/{first.eid}/packages"),
                "second": await api.get(f"/v1/esim/euiccs/{second.eid}/packages"),
            }
        finally:
            await client.aclose()
            await api.aclose()

    async def settle_first() -> dict[str, Any]:
        api = Api(world.serve)
        client = world.client()
        try:
            await HttpsIpa(ipa_first, client, world.esipa_url).settle()
            found: dict[str, Any] = await api.get(f"/v1/esim/euiccs/{first.eid}/packages")
            audit = await api.get("/v1/audit", params={"action": "esim.result"})
            found["audit"] = audit["items"]
            return found
        finally:
            await client.aclose()
            await api.aclose()

    try:
        packages = run(case(), timeout=90)
        second_results = packages["second"]["items"][0]["result"]["results"]
        assert second_results == [["listEimResult", ["eimIdList", [{"eimId": EIM_TWO}]]]]
        first_items = packages["first"]["items"]
        assert [p["operations"][0]["op"] for p in first_items] == ["updateEim", "addEim"]
        assert all(p["state"] == "done" for p in first_items)
        assert first_items[1]["result"]["results"] == [["addEimResult", ["addEimResultCode", 0]]]

        # the CLI: eIM identities, selection by binding, listEim and deleteEim
        shown = world.serve.cli("esim", "eims")
        assert EIM_TWO in shown.stdout and f"{EIM_ID} (default)" in shown.stdout, shown
        listed = world.serve.cli("esim", "list", "--eim-id", EIM_TWO)
        assert second.eid in listed.stdout and first.eid not in listed.stdout, listed
        done = world.serve.cli("esim", "eim", "list", first.eid)
        assert done.returncode == 0 and "queued list-eim" in done.stdout, done
        done = world.serve.cli("esim", "eim", "delete", EIM_TWO, "--bound-to", EIM_ID)
        assert done.returncode == 0 and first.eid in done.stdout, done
        bad = world.serve.cli("esim", "eim", "add", "eim.elsewhere", first.eid)
        assert bad.returncode == 2 and "public_key" in bad.stderr, bad  # 422: usage
        after = run(settle_first(), timeout=60)
        assert EIM_TWO not in first.eims
        ops = [(p["operations"][0]["op"], p["result"]["results"]) for p in after["items"][:2]]
        assert ops == [
            ("deleteEim", [["deleteEimResult", 0]]),
            (
                "listEim",
                [["listEimResult", ["eimIdList", [{"eimId": EIM_TWO}, {"eimId": EIM_ID}]]]],
            ),
        ]
        audited = {(e["subject"], e["outcome"]) for e in after["audit"]}
        assert (f"eid:{first.eid}", "ok") in audited and (f"eid:{second.eid}", "ok") in audited
    finally:
        stop_serve(world)
