"""eIM-initiated ESipa over CoAP against a real ``fleetloop serve`` (UDP on 127.0.0.1, port 0):
a device whose IPA declared ipaInjectCoaps gets its package pushed (POST /gsma/rsp2/asn1 to
the address it registered from), answers with the signed result at once, and is acknowledged
by a second push -- with no poll at all; a device whose IPA did not declare it is not pushed
to (its package waits, still queued, for its poll); a push the IPA refuses (busy) leaves the
package to the IPA's next poll -- or to the push when its device registers again; a package
the IPA answers with eimPackageError fails; an answer that is no TransferEimPackageResponse
changes nothing; a queue-mode device is pushed to again when it wakes up (its Update).

The push rides the device's own DM session (``LwM2MServer.coap_request``): a device registered
over DTLS-PSK gets it inside its DTLS session (its only socket is that session), and a device
behind a NAT that drops whatever does not come from the DM server's address (address-and-port
dependent filtering, a different source port than the device's own) gets it through the NAT
binding its registration opened."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiocoap.numbers.codes import Code

from sgp32.asn1 import decode_from_eim
from simulators.esim.coap import CoapDeviceIpa
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import NEW_ICCID, EsimWorld, esim_serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-push")) as running:
        yield running


def test_an_ipa_that_takes_pushes_is_pushed_to_and_one_that_does_not_polls(
    world: EsimWorld,
) -> None:
    euicc_a, ipa_a = world.device("61", 1)
    euicc_b, ipa_b = world.device("61", 2)
    euicc_c, ipa_c = world.device("61", 3)
    euicc_d, ipa_d = world.device("61", 4)
    euicc_e, ipa_e = world.device("61", 5)
    euicc_f, ipa_f = world.device("61", 6)
    euicc_g, ipa_g = world.device("61", 7)
    for ipa in (ipa_c, ipa_d, ipa_e, ipa_f, ipa_g):
        ipa.ipa_protocols = (1, 3)
    ipa_a.ipa_protocols = (1, 3)  # ipaRetrieveCoaps, ipaInjectCoaps
    ipa_b.ipa_protocols = (1,)  # polls only
    server = ("127.0.0.1", world.serve.port("coap"))

    async def case() -> None:
        api = Api(world.serve)
        ipas = (ipa_a, ipa_b, ipa_c, ipa_d, ipa_e, ipa_f, ipa_g)
        devices = [CoapDeviceIpa(ipa, server) for ipa in ipas]
        devices[6].busy_pushes = 1  # and in queue mode: pushed again when it wakes (Update)
        devices[5].push_garbage = bytes.fromhex("3000")  # not a TransferEimPackageResponse
        devices[2].busy_pushes = devices[3].busy_pushes = 1
        devices[4].push_error = 1  # invalidPackageFormat
        try:
            items = []
            for n, device in enumerate(devices):
                await device.open()
                endpoint = f"esim-push-{n}"
                binding = "UQ" if n == 6 else "U"
                assert (await device.register(endpoint, binding=binding)).code == Code.CREATED
                items.append(world.import_item(device.ipa.euicc.eid, endpoint))
            await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
            eids = [d.ipa.euicc.eid for d in devices]
            # the eIM learns the capabilities (IpaEuiccData) on the IPAs' polls
            await api.post("/v1/esim/packages", {"operation": "ipa-data", "eids": eids}, expect=201)
            for device in devices:
                await device.settle()
            assert all(d.pushed == [] for d in devices)

            await api.post(
                "/v1/esim/packages",
                {"operation": "enable", "iccid": NEW_ICCID, "eids": eids},
                expect=201,
            )

            async def pushed_and_confirmed() -> bool:
                shown = await api.get(f"/v1/esim/euiccs/{euicc_a.eid}")
                return [p["state"] for p in shown["packages"]] == ["done", "done"] and (
                    not ipa_a.pending
                )

            await eventually(pushed_and_confirmed, timeout=20)
            assert euicc_a.enabled is not None and euicc_a.enabled.iccid == NEW_ICCID
            assert not euicc_a.can_roll_back, "the acknowledgement confirmed the enable"
            kinds = [decode_from_eim(p).body[0] for p in devices[0].pushed]
            assert kinds == ["euiccPackageRequest", "eimAcknowledgements"]
            shown = await api.get(f"/v1/esim/euiccs/{euicc_a.eid}")
            profiles = {p["iccid"]: p for p in shown["profiles"]}
            assert profiles[NEW_ICCID]["state"] == "enabled"
            assert profiles[NEW_ICCID]["note"] == "confirmed"

            # B never declared ipaInjectCoaps: nothing pushed, its package still queued
            assert devices[1].pushed == []
            shown_b = await api.get(f"/v1/esim/euiccs/{euicc_b.eid}")
            assert [p["state"] for p in shown_b["queue"]] == ["queued"]  # never delivered
            await devices[1].settle()
            assert euicc_b.enabled is not None and euicc_b.enabled.iccid == NEW_ICCID
            shown_b = await api.get(f"/v1/esim/euiccs/{euicc_b.eid}")
            assert [p["state"] for p in shown_b["packages"]] == ["done", "done"]

            # C took pushes but was busy: the package, delivered by the push, goes on a poll
            async def refused() -> bool:
                return len(devices[2].pushed) == 1

            await eventually(refused, timeout=20)
            assert euicc_c.enabled is not None and euicc_c.enabled.iccid != NEW_ICCID
            await devices[2].settle()
            shown_c = await api.get(f"/v1/esim/euiccs/{euicc_c.eid}")
            assert [p["state"] for p in shown_c["packages"]] == ["done", "done"]
            assert euicc_c.enabled is not None and euicc_c.enabled.iccid == NEW_ICCID

            # D was busy too; it registers again and the push comes with it, no poll
            async def d_refused() -> bool:
                return len(devices[3].pushed) == 1

            await eventually(d_refused, timeout=20)
            assert (await devices[3].register("esim-push-3")).code == Code.CREATED

            async def d_done() -> bool:
                shown = await api.get(f"/v1/esim/euiccs/{euicc_d.eid}")
                return [p["state"] for p in shown["packages"]] == ["done", "done"]

            await eventually(d_done, timeout=20)
            assert euicc_d.enabled is not None and euicc_d.enabled.iccid == NEW_ICCID
            assert len(devices[3].pushed) == 3  # refused, package, acknowledgement

            # E answered the push with eimPackageError: the package failed, nothing ran
            async def e_failed() -> bool:
                shown = await api.get(f"/v1/esim/euiccs/{euicc_e.eid}")
                return [p["state"] for p in shown["packages"]] == ["failed", "done"]

            await eventually(e_failed, timeout=20)
            assert euicc_e.enabled is not None and euicc_e.enabled.iccid != NEW_ICCID

            # F answered garbage: refused, the package left open for F's poll
            async def f_answered() -> bool:
                return len(devices[5].pushed) == 1

            await eventually(f_answered, timeout=20)
            await devices[5].settle()
            shown_f = await api.get(f"/v1/esim/euiccs/{euicc_f.eid}")
            assert [p["state"] for p in shown_f["packages"]] == ["done", "done"]
            assert euicc_f.enabled is not None and euicc_f.enabled.iccid == NEW_ICCID

            # G (queue mode) was busy; its Update (waking up) brings the push, no poll
            async def g_refused() -> bool:
                return len(devices[6].pushed) == 1

            await eventually(g_refused, timeout=20)
            assert (await devices[6].update()).code == Code.CHANGED

            async def g_done() -> bool:
                shown = await api.get(f"/v1/esim/euiccs/{euicc_g.eid}")
                return [p["state"] for p in shown["packages"]] == ["done", "done"]

            await eventually(g_done, timeout=20)
            assert euicc_g.enabled is not None and euicc_g.enabled.iccid == NEW_ICCID
        finally:
            for device in devices:
                device.close()
            await api.aclose()

    run(case(), timeout=60)


def _confirmed(api: Api, eid: str, ipa: Any) -> Any:
    async def check() -> bool:
        shown = await api.get(f"/v1/esim/euiccs/{eid}")
        return [p["state"] for p in shown["packages"]] == ["done", "done"] and not ipa.pending

    return check


def test_a_device_registered_over_dtls_psk_is_pushed_to_in_its_dtls_session(
    world: EsimWorld,
) -> None:
    euicc, ipa = world.device("62", 1)
    ipa.ipa_protocols = (1, 3)  # ipaRetrieveCoaps, ipaInjectCoaps
    coaps = ("127.0.0.1", world.serve.port("coaps"))
    endpoint, identity, key = "esim-push-dtls", b"esim-push-dtls-id", bytes(range(16))

    async def case() -> None:
        api = Api(world.serve)
        device = CoapDeviceIpa(ipa, coaps)
        try:
            await api.put(
                f"/v1/security/{endpoint}",
                {"psk_identity": identity.decode(), "psk_key": key.hex()},
            )
            await device.socket.open_dtls(coaps, (identity, key))  # its only socket
            assert (await device.register(endpoint)).code == Code.CREATED
            shown = await api.get(f"/v1/devices/{endpoint}")
            assert shown.get("registration", shown)["secure"] is True
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(euicc.eid, endpoint)]}, expect=201
            )
            # the eIM learns the capabilities (IpaEuiccData) on the IPA's poll, over CoAPs
            await api.post(
                "/v1/esim/packages", {"operation": "ipa-data", "eids": [euicc.eid]}, expect=201
            )
            await device.settle()
            assert device.pushed == []
            await api.post(
                "/v1/esim/packages",
                {"operation": "enable", "iccid": NEW_ICCID, "eids": [euicc.eid]},
                expect=201,
            )
            await eventually(_confirmed(api, euicc.eid, ipa), timeout=20)  # no poll at all
            kinds = [decode_from_eim(p).body[0] for p in device.pushed]
            assert kinds == ["euiccPackageRequest", "eimAcknowledgements"]
            assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
            assert not euicc.can_roll_back, "the pushed acknowledgement confirmed the enable"
            shown = await api.get(f"/v1/esim/euiccs/{euicc.eid}")
            profiles = {p["iccid"]: p for p in shown["profiles"]}
            assert profiles[NEW_ICCID]["note"] == "confirmed"
        finally:
            device.close()
            await api.aclose()

    run(case(), timeout=60)


class Nat(asyncio.DatagramProtocol):
    """A NAT between one device and the DM server, with address-and-port-dependent filtering:
    the device sends to `inside`, the NAT forwards from its own `outside` port (the address
    the server sees), and lets back in only what comes from the server's address."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.device: Any = None
        self.inside: Any = None
        self.outside: Any = None
        self.forwarded_in = 0
        self.dropped = 0

    async def open(self) -> tuple[tuple[str, int], tuple[str, int]]:
        loop = asyncio.get_running_loop()
        nat = self

        class Inside(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                nat.device = addr
                nat.outside.sendto(data, nat.server)

        class Outside(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if (addr[0], addr[1]) != nat.server or nat.device is None:
                    nat.dropped += 1
                    return
                nat.forwarded_in += 1
                nat.inside.sendto(data, nat.device)

        self.inside, _ = await loop.create_datagram_endpoint(Inside, local_addr=("127.0.0.1", 0))
        self.outside, _ = await loop.create_datagram_endpoint(Outside, local_addr=("127.0.0.1", 0))
        inside = self.inside.get_extra_info("sockname")[:2]
        outside = self.outside.get_extra_info("sockname")[:2]
        return (str(inside[0]), int(inside[1])), (str(outside[0]), int(outside[1]))

    def close(self) -> None:
        for transport in (self.inside, self.outside):
            if transport is not None:
                transport.close()


def test_a_device_behind_a_nat_is_pushed_to_through_the_binding_it_registered_from(
    world: EsimWorld,
) -> None:
    euicc, ipa = world.device("62", 2)
    ipa.ipa_protocols = (1, 3)
    server = ("127.0.0.1", world.serve.port("coap"))
    endpoint = "esim-push-nat"

    async def case() -> None:
        api = Api(world.serve)
        nat = Nat(server)
        inside, outside = await nat.open()
        device = CoapDeviceIpa(ipa, inside)  # it talks to the NAT; the NAT to the server
        try:
            own = await device.open()
            assert (await device.register(endpoint)).code == Code.CREATED
            shown = await api.get(f"/v1/devices/{endpoint}")
            registered = shown.get("registration", shown)["address"]
            assert registered.endswith(f":{outside[1]}")  # the NAT's port, not the device's
            assert outside[1] != own[1]
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(euicc.eid, endpoint)]}, expect=201
            )
            await api.post(
                "/v1/esim/packages", {"operation": "ipa-data", "eids": [euicc.eid]}, expect=201
            )
            await device.settle()
            forwarded = nat.forwarded_in
            await api.post(
                "/v1/esim/packages",
                {"operation": "enable", "iccid": NEW_ICCID, "eids": [euicc.eid]},
                expect=201,
            )
            await eventually(_confirmed(api, euicc.eid, ipa), timeout=20)  # no poll at all
            kinds = [decode_from_eim(p).body[0] for p in device.pushed]
            assert kinds == ["euiccPackageRequest", "eimAcknowledgements"]
            assert nat.forwarded_in >= forwarded + 2  # both pushes came in through the NAT
            assert nat.dropped == 0  # nothing came from anywhere but the DM server's socket
            assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
        finally:
            device.close()
            nat.close()
            await api.aclose()

    run(case(), timeout=60)
