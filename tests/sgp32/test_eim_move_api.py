"""Moving an eUICC to another eIM identity of the deployment through the API and the CLI,
against a real ``fleetloop serve`` with two identities and a simulated eUICC + IPA over the
HTTPS ESipa binding:

* ``POST /v1/esim/euiccs/{euicc}/eim`` refuses an unknown eIM (422) and, naming the EID and
  the fix, one the eUICC has not confirmed and a move while a package is open (409);
* deleteEim of the eIM an eUICC is bound to is refused (409, ``esim eim delete`` exit 1)
  naming the EID and the fix (move it first);
* after the eUICC's signed addEim result, ``fleetloop esim eim move EIM --bound-to OLD
  --delete-old`` (``POST /v1/esim/moves``) moves it and queues deleteEim of the old eIM signed
  by the new one -- and leaves a second eUICC whose addEim is not answered yet where it is,
  saying why (exit 1); the eUICC executes the deleteEim;
  later packages are signed by the new eIM with its own counter and accepted; ``esim show``
  and ``GET /v1/esim/euiccs/{eid}`` list the associations; the move is audited.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.esim.https import HttpsIpa
from tests.integration.conftest import Api, run
from tests.sgp32.serve_world import EIM_ID, NEW_ICCID, EsimFiles, start_serve, stop_serve
from tests.sgp32.test_esim_eco import EIM_TWO, second_eim

pytestmark = pytest.mark.integration


def test_move_an_euicc_to_another_eim_through_api_and_cli(tmp_path: Path) -> None:
    files = EsimFiles.make(tmp_path / "esim-move")
    identities, _key_two, _cert_two = second_eim(files.folder)
    world = start_serve(files, ["--eim-identities", str(identities)])
    euicc, ipa = world.device("85", 1)
    late, _late_ipa = world.device("85", 2)  # its IPA never polls: its addEim stays queued
    eid = euicc.eid
    endpoint = "meter-move-1"
    move_path = f"/v1/esim/euiccs/{eid}/eim"

    async def before_move() -> dict[str, Any]:
        api = Api(world.serve)
        client = world.client()
        remote = HttpsIpa(ipa, client, world.esipa_url)
        try:
            items = [world.import_item(eid, endpoint), world.import_item(late.eid)]
            await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
            unknown = await api.post(move_path, {"eim_id": "eim.unknown"}, expect=422)
            never = await api.post(move_path, {"eim_id": EIM_TWO}, expect=409)
            add = {"operation": "add-eim", "eim": {"eim_id": EIM_TWO, "association_token": -1}}
            await api.post(f"/v1/esim/euiccs/{endpoint}/packages", add, expect=201)
            await api.post(f"/v1/esim/euiccs/{late.eid}/packages", add, expect=201)
            waiting = await api.post(move_path, {"eim_id": EIM_TWO}, expect=409)
            await remote.settle()
            await api.post(f"/v1/esim/euiccs/{eid}/packages", {"operation": "list-eim"}, expect=201)
            busy = await api.post(move_path, {"eim_id": EIM_TWO}, expect=409)
            await remote.settle()
            delete = {"operation": "delete-eim", "eim_id": EIM_ID}
            bound = await api.post(f"/v1/esim/euiccs/{eid}/packages", delete, expect=409)
            every = await api.post("/v1/esim/packages", {**delete, "bound_to": EIM_ID}, expect=409)
            return {
                "unknown": unknown,
                "never": never,
                "waiting": waiting,
                "busy": busy,
                "bound": bound,
                "every": every,
            }
        finally:
            await client.aclose()
            await api.aclose()

    async def after_move() -> dict[str, Any]:
        api = Api(world.serve)
        client = world.client()
        remote = HttpsIpa(ipa, client, world.esipa_url)
        try:
            await remote.settle()  # the deleteEim, signed by eIM two
            body = {"operation": "enable", "iccid": NEW_ICCID}
            await api.post(f"/v1/esim/euiccs/{eid}/packages", body, expect=201)
            await remote.settle()
            back = await api.post(move_path, {"eim_id": EIM_ID}, expect=409)
            audit = await api.get("/v1/audit", params={"action": "esim.euicc.move"})
            return {
                "shown": await api.get(f"/v1/esim/euiccs/{endpoint}"),
                "packages": await api.get(f"/v1/esim/euiccs/{eid}/packages"),
                "eims": await api.get("/v1/esim/eims"),
                "back": back,
                "audit": audit["items"],
            }
        finally:
            await client.aclose()
            await api.aclose()

    try:
        refused = run(before_move(), timeout=90)
        assert (
            eid in refused["unknown"]["message"] and "eim.unknown" in refused["unknown"]["message"]
        )
        assert eid in refused["never"]["message"]
        assert f"fleetloop esim eim add {EIM_TWO} {eid}" in refused["never"]["message"]
        assert "still waiting" in refused["waiting"]["message"]
        assert eid in refused["busy"]["message"] and "#2" in refused["busy"]["message"]
        assert euicc.eims[EIM_TWO].association_token == 1
        # deleting the eIM the eUICC is bound to is refused, naming the EID and the fix;
        # nothing is queued (the move below still takes counter 3)
        assert eid in refused["bound"]["message"] and "bound to" in refused["bound"]["message"]
        assert "fleetloop esim eim move" in refused["bound"]["message"]
        assert "bound to" in refused["every"]["message"]
        cut = world.serve.cli("esim", "eim", "delete", EIM_ID, endpoint)
        assert cut.returncode == 1 and f"EID {eid} is bound to eIM" in cut.stderr, cut
        assert "fleetloop esim eim move" in cut.stderr, cut

        moved = world.serve.cli(
            "esim", "eim", "move", EIM_TWO, "--bound-to", EIM_ID, "--delete-old"
        )
        assert moved.returncode == 1, moved  # one of the two could not move yet
        assert f"eUICC {eid} moved to {EIM_TWO} (counter 3)" in moved.stdout, moved
        assert f"queued delete-eim {EIM_ID}: package #3" in moved.stdout, moved
        assert late.eid not in moved.stdout, moved
        assert f"not moved: EID {late.eid}" in moved.stderr, moved
        assert "still waiting" in moved.stderr, moved
        again = world.serve.cli("esim", "eim", "move", EIM_TWO, endpoint)
        assert again.returncode == 1 and "already bound" in again.stderr, again

        done = run(after_move(), timeout=90)
        assert set(euicc.eims) == {EIM_TWO} and euicc.eims[EIM_TWO].counter_value == 4
        assert ipa.refused == [] and euicc.enabled is not None
        assert euicc.enabled.iccid == NEW_ICCID
        shown = done["shown"]
        assert (shown["eim_id"], shown["counter_value"]) == (EIM_TWO, 4)
        assocs = {a["eim_id"]: a for a in shown["associations"]}
        assert assocs[EIM_TWO]["bound"] and assocs[EIM_TWO]["association_token"] == 1
        assert assocs[EIM_ID]["deleted_at_epoch"] is not None and not assocs[EIM_ID]["bound"]
        signed_by = [
            (p["counter_value"], p["eim_id"], p["state"]) for p in done["packages"]["items"]
        ]
        assert signed_by == [
            (4, EIM_TWO, "done"),
            (3, EIM_TWO, "done"),
            (2, EIM_ID, "done"),
            (1, EIM_ID, "done"),
        ]
        assert "deleted" in done["back"]["message"] and eid in done["back"]["message"]
        counts = {i["eim_id"]: i["euiccs"] for i in done["eims"]["items"]}
        assert counts == {EIM_ID: 1, EIM_TWO: 1}
        (entry,) = done["audit"]
        assert entry["subject"] == f"eid:{eid}" and entry["detail"]["to"] == EIM_TWO

        show = world.serve.cli("esim", "show", endpoint)
        assert f"eIM      {EIM_TWO} (bound, counter 4)" in show.stdout, show
        assert f"eIM      {EIM_ID} (deleted, counter 2)" in show.stdout, show
    finally:
        stop_serve(world)
