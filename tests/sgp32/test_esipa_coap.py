"""ESipa over CoAP end to end against a real ``fleetloop serve``: ``POST /gsma/rsp2/asn1`` on
the DM server's own CoAP socket (127.0.0.1, port 0), a simulated IPA speaking aiocoap. The
same eIM answers as over HTTPS: a package goes out (in 16-byte Block2 blocks when the IPA asks
for them), a result too large for one datagram comes back in Block1 blocks, and what is not an
ESipa message gets 4.00 with the reason. (The DM server takes block-wise request bodies only
from a registered device's address, so the IPA's device registers over LwM2M first.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from aiocoap import POST, Context, Message
from aiocoap.numbers.codes import Code

from simulators.esim.coap import CoapIpa
from simulators.esim.euicc import SimProfile
from simulators.esim.https import EsipaError, HttpsIpa
from simulators.esim.ipa import SimIpa
from tests.integration.conftest import Api, run
from tests.server.conftest import RawClient
from tests.sgp32.serve_world import NEW_ICCID, OLD_ICCID, EsimWorld, esim_serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-coap")) as running:
        yield running


def test_packages_and_results_travel_over_coap_blockwise(world: EsimWorld) -> None:
    euicc, ipa = world.device("41", 1)
    for n in range(40):  # a profile list far over one CoAP block
        iccid = f"8988247000001{n:04d}00"  # 19 digits
        euicc.profiles[iccid] = SimProfile(iccid, f"Carrier {n:02d} with a long name")
    coap_uri = world.serve.coap_uri

    async def case() -> None:
        api = Api(world.serve)
        context = await Context.create_client_context()
        try:
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(euicc.eid)]}, expect=201
            )
            await api.post(
                f"/v1/esim/euiccs/{euicc.eid}/packages",
                {"operation": "list-profiles"},
                expect=201,
            )
            await api.post(
                f"/v1/esim/euiccs/{euicc.eid}/packages",
                {"operation": "enable", "iccid": NEW_ICCID},
                expect=201,
            )
            # The DM server takes block-wise bodies only from registered devices: the IPA's
            # device registers over LwM2M from the same socket first, as a real one would.
            register = Message(
                code=POST,
                uri=coap_uri + "/rd?ep=esim-coap-1&lt=300&lwm2m=1.1&b=U",
                payload=b"</1/0>,</3/0>",
            )
            register.opt.content_format = 40
            assert (await context.request(register).response).code == Code.CREATED
            remote = CoapIpa(ipa, context, coap_uri, early_block2_szx=0)
            await remote.settle()
            assert remote.codes and all(code == Code.CHANGED for code in remote.codes)
            assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
            shown = await api.get(f"/v1/esim/euiccs/{euicc.eid}")
            profiles = {p["iccid"]: p for p in shown["profiles"]}
            assert len(profiles) == 42  # the list came back whole (Block1)
            assert profiles[NEW_ICCID]["state"] == "enabled"
            assert profiles[NEW_ICCID]["note"] == "confirmed"
            assert profiles[OLD_ICCID]["state"] == "disabled"
            assert [p["state"] for p in shown["packages"]] == ["done", "done"]

            garbage = Message(code=POST, uri=coap_uri + "/gsma/rsp2/asn1", payload=b"\x30\x00")
            answer = await context.request(garbage).response
            assert answer.code == Code.BAD_REQUEST
            assert b"not an ESipa message" in answer.payload
            other = Message(code=POST, uri=coap_uri + "/gsma/rsp2/other", payload=b"")
            assert (await context.request(other).response).code == Code.NOT_FOUND
        finally:
            await context.shutdown()
            await api.aclose()

    run(case(), timeout=60)


class CoapsIpa(HttpsIpa):
    """The simulated IPA over CoAPs: the repository's own CoAP core on a DTLS-PSK session
    (Block1/Block2 done by the core), as a device registered over LwM2M on it."""

    def __init__(self, ipa: SimIpa, raw: RawClient) -> None:
        self.ipa = ipa
        self.raw = raw
        self.clock = time.time

    async def _post(self, sent: bytes) -> bytes | None:
        answer = await self.raw.request(
            Code.POST, "/gsma/rsp2/asn1", payload=sent, content_format=42, timeout=10.0
        )
        if answer.code != Code.CHANGED:
            raise EsipaError(f"eIM answered {answer.code}: {answer.payload[:200]!r}")
        return answer.payload or None


def test_esipa_over_coaps_with_a_psk_session(world: EsimWorld) -> None:
    euicc, ipa = world.device("42", 1)
    for n in range(40):  # the listProfileInfo result needs Block1 here too
        iccid = f"8988247000002{n:04d}00"
        euicc.profiles[iccid] = SimProfile(iccid, f"Carrier {n:02d} with a long name")
    endpoint, key = "esim-coaps-1", bytes(range(16))

    async def case() -> None:
        api = Api(world.serve)
        raw = RawClient()
        try:
            await api.put(
                f"/v1/security/{endpoint}", {"psk_identity": endpoint, "psk_key": key.hex()}
            )
            await raw.connect(
                ("127.0.0.1", world.serve.port("coaps")), psk=(endpoint.encode(), key)
            )
            assert (await raw.register(endpoint)).code == Code.CREATED
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(euicc.eid)]}, expect=201
            )
            for body in (
                {"operation": "list-profiles"},
                {"operation": "enable", "iccid": NEW_ICCID},
            ):
                await api.post(f"/v1/esim/euiccs/{euicc.eid}/packages", body, expect=201)
            await CoapsIpa(ipa, raw).settle()
            assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
            shown = await api.get(f"/v1/esim/euiccs/{euicc.eid}")
            assert len(shown["profiles"]) == 42
            assert [p["state"] for p in shown["packages"]] == ["done", "done"]
        finally:
            raw.close()
            await api.aclose()

    run(case(), timeout=60)
