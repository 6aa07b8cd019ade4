"""Firmware from fleetloop's own repository, end to end against the real ``fleetloop serve``:
a signed 256 KiB image uploaded through the API, then pulled over CoAP and CoAPs (Block2 from
the DM server's own ``/fw/<id>`` endpoint) and pushed (Block1 Write of /5/0/0) to 200
simulated devices at once -- each ends on the new version reported over LwM2M -- while other
devices keep registering. Also: Block2 resume at any block with the image's ETag, quarantine
refusing new downloads, and an acknowledged upload surviving ``kill -9``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.artifacts.firmware import new_vendor_key, sign_image
from simulators.device.firmware import build_image
from simulators.fleet.runner import DeviceFleet
from simulators.identities import generate
from simulators.profiles import DeviceProfile
from tests.integration.conftest import Api, Serve, eventually, run, start_serve

pytestmark = pytest.mark.integration

SIZE = 256 * 1024
PRIVATE, PUBLIC = new_vendor_key()


def _upload(serve: Serve, image: bytes, version: str, signature: bytes, expect: int) -> Any:
    response = httpx.post(
        f"{serve.url}/v1/firmware/images",
        params={"version": version, "signature": signature.hex(), "skus": "tracker"},
        content=image,
        headers={
            "Authorization": f"Bearer {serve.token}",
            "Content-Type": "application/octet-stream",
        },
        timeout=60,
    )
    assert response.status_code == expect, response.text
    return response.json()


def _trust(serve: Serve, name: str) -> None:
    response = httpx.post(
        f"{serve.url}/v1/firmware/keys",
        json={"name": name, "public_key": PUBLIC.decode()},
        headers={"Authorization": f"Bearer {serve.token}"},
        timeout=30,
    )
    assert response.status_code in (201,), response.text


def _coap_get(
    port: int, path: tuple[str, ...], block: int | None, mid: int, szx: int = 6
) -> Message:
    """One CON GET over a real UDP socket (Block2 ``block`` at ``2**(szx+4)`` bytes)."""
    request = Message(code=Code.GET)
    request.mtype, request.mid, request.token = Type.CON, mid, mid.to_bytes(2, "big")
    request.opt.uri_path = path
    if block is not None:
        request.opt.block2 = (block, False, szx)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sock.sendto(request.encode(), ("127.0.0.1", port))
        data, _ = sock.recvfrom(4096)
    return Message.decode(data)


def test_block2_resumes_at_any_block_with_the_etag_and_quarantine_refuses_new_downloads(
    serve: Serve,
) -> None:
    _trust(serve, "acme-b2")
    image = build_image("7.0.0", 10_000, seed=3)
    bad = _upload(serve, image, "7.0.0", sign_image(image + b"!", PRIVATE), 422)
    assert "verifies against none of the trusted vendor keys" in bad["message"]
    shown = _upload(serve, image, "7.0.0", sign_image(image, PRIVATE), 201)
    assert shown["uris"]["coap"] == f"{serve.coap_uri}/fw/{shown['id']}"
    port = serve.port("coap")
    path = ("fw", shown["id"])
    first = _coap_get(port, path, None, 101)  # no Block2 option: block 0 at the largest size
    assert first.code == Code.CONTENT and first.payload == image[:1024]
    assert first.opt.block2.more and first.opt.size2 == len(image)
    etag = first.opt.etag
    assert etag == bytes.fromhex(shown["sha256"][:16])
    resumed = _coap_get(port, path, 7, 102)  # "after a reconnect": a new socket, block 7
    assert resumed.payload == image[7 * 1024 : 8 * 1024] and resumed.opt.etag == etag
    last = _coap_get(port, path, 9, 103)
    assert last.payload == image[9 * 1024 :] and not last.opt.block2.more
    assert _coap_get(port, path, 10, 104).code == Code.BAD_OPTION
    assert _coap_get(port, ("fw", "0" * 16), 0, 105).code == Code.NOT_FOUND
    headers = {"Authorization": f"Bearer {serve.token}"}
    marked = httpx.post(
        f"{serve.url}/v1/firmware/images/{shown['id']}/quarantine",
        json={"reason": "test: bad image"},
        headers=headers,
    ).json()
    assert marked["quarantined"] and marked["quarantine"]["reason"] == "test: bad image"
    halted = httpx.get(f"{serve.url}/v1/artifacts/quarantine", headers=headers).json()
    assert shown["id"] in {item["artifact"] for item in halted["items"]}  # campaigns halt too
    assert _coap_get(port, path, 0, 106).code == Code.NOT_FOUND  # no NEW download
    assert _coap_get(port, path, 3, 107).payload == image[3072:4096]  # one under way finishes
    lifted = httpx.delete(
        f"{serve.url}/v1/firmware/images/{shown['id']}/quarantine", headers=headers
    ).json()
    assert not lifted["quarantined"]
    assert _coap_get(port, path, 0, 108).code == Code.CONTENT
    fuzz_blocks(port, path, image)


def fuzz_blocks(port: int, path: tuple[str, ...], image: bytes) -> None:
    """Any Block2 number and size over the wire: the right slice, or 4.02 past the end."""
    mids = iter(range(1000, 60000))

    @settings(max_examples=40, deadline=None, database=None)
    @given(block=st.integers(min_value=0, max_value=2**16), szx=st.integers(0, 6))
    def check(block: int, szx: int) -> None:
        answer = _coap_get(port, path, block, next(mids), szx)
        size = 1 << (szx + 4)
        if block * size >= len(image):
            assert answer.code == Code.BAD_OPTION
        else:
            assert answer.code == Code.CONTENT
            assert answer.payload == image[block * size : (block + 1) * size]
            assert answer.opt.block2.block_number == block
            assert answer.opt.block2.more == ((block + 1) * size < len(image))

    check()


async def _rows(api: Api, endpoints: list[str]) -> dict[str, dict[str, Any]]:
    async def one(endpoint: str) -> tuple[str, dict[str, Any]]:
        state = await api.get(f"/v1/devices/{endpoint}/state")
        return endpoint, {r["dimension"]: r for r in state["dimensions"]}["firmware"]

    return dict(await asyncio.gather(*(one(e) for e in endpoints)))


def test_a_256_kib_image_is_pulled_and_pushed_by_200_devices_at_once(serve: Serve) -> None:
    _trust(serve, "acme-e2e")
    image = build_image("3.0.0", SIZE, seed=9)
    uploaded = _upload(serve, image, "3.0.0", sign_image(image, PRIVATE), 201)
    image_id, sha = uploaded["id"], uploaded["sha256"]
    profile = DeviceProfile().with_behaviour(install_time=0.2)

    async def case() -> None:
        api = Api(serve)
        secure_ids = generate(40, prefix="fwx-s-", seed=4)
        try:
            for identity in secure_ids:
                assert identity.psk_identity is not None and identity.psk_key is not None
                await api.put(
                    f"/v1/security/{identity.endpoint}",
                    {
                        "psk_identity": identity.psk_identity.decode(),
                        "psk_key": identity.psk_key.hex(),
                    },
                )
            async with DeviceFleet(serve.coap_uri, seed=4) as fleet:
                pull = [
                    fleet.device(i).endpoint
                    for i in fleet.spawn(60, prefix="fwx-p-", profile=profile)
                ]
                push = [
                    fleet.device(i).endpoint
                    for i in fleet.spawn(100, prefix="fwx-u-", profile=profile)
                ]
                fleet.spawn(identities=secure_ids, profile=profile, server_uri=serve.coaps_uri)
                secure = [i.endpoint for i in secure_ids]
                await fleet.wait_registered(timeout=60)
                await api.put(
                    "/v1/state",
                    {
                        "endpoints": pull,
                        "values": {
                            "firmware": {"version": "3.0.0", "uri": uploaded["uris"]["coap"]}
                        },
                    },
                )
                await api.put(
                    "/v1/state",
                    {
                        "endpoints": secure,
                        "values": {
                            "firmware": {"version": "3.0.0", "uri": uploaded["uris"]["coaps"]}
                        },
                    },
                )
                await api.put(
                    "/v1/state",
                    {
                        "endpoints": push,
                        "values": {
                            "firmware": {"version": "3.0.0", "image": sha, "method": "push"}
                        },
                    },
                )
                # Meanwhile other devices register: the downloads must not stall them.
                late = fleet.spawn(60, prefix="fwx-late-")
                await fleet.wait_registered(timeout=60)
                assert all(fleet.device(i).registered for i in late)

                everyone = pull + secure + push

                async def applied() -> bool:
                    # 200 state reads per poll compete with the transfer: poll once a second
                    await asyncio.sleep(1.0)
                    rows = await _rows(api, everyone)
                    return all(r["status"] in ("applied", "failed") for r in rows.values())

                await eventually(applied, timeout=120)
                rows = await _rows(api, everyone)
                failed = {e: r for e, r in rows.items() if r["status"] != "applied"}
                assert not failed, list(failed.items())[:3]
                # each device reports the new version over LwM2M
                for endpoint in pull[:2] + secure[:2] + push[:2]:
                    value = await api.get(f"/v1/devices/{endpoint}/data/3/0/3")
                    assert value["content"]["value"] == "3.0.0", endpoint
                progress = await api.get("/v1/firmware/progress", params={"image": image_id})
                done = {p["who"] for p in progress["items"] if p["done"]}
                assert set(pull + secure) <= done
                assert not set(push) & {p["who"] for p in progress["items"]}
                blocks = {p["who"]: p["blocks"] for p in progress["items"]}
                assert all(blocks[e] >= len(image) // 1024 for e in pull + secure)
        finally:
            await api.aclose()

    run(case(), timeout=240)


def test_an_acknowledged_upload_survives_kill_9(tmp_path: Path) -> None:
    with start_serve(tmp_path / "data") as first:
        _trust(first, "acme-k9")
        image = build_image("8.0.0", 20_000, seed=5)
        shown = _upload(first, image, "8.0.0", sign_image(image, PRIVATE), 201)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
    (tmp_path / "data" / "api.json").unlink(missing_ok=True)
    with start_serve(tmp_path / "data") as second:
        again = httpx.get(
            f"{second.url}/v1/firmware/images/{shown['id']}",
            headers={"Authorization": f"Bearer {second.token}"},
        ).json()
        assert again["sha256"] == shown["sha256"] and again["size"] == len(image)
        got = b""
        for block in range(20):
            answer = _coap_get(second.port("coap"), ("fw", shown["id"]), block, 200 + block)
            got += answer.payload
            if not answer.opt.block2.more:
                break
        assert got == image


def test_the_cli_trusts_a_key_signs_uploads_lists_and_quarantines(
    serve: Serve, tmp_path: Path
) -> None:
    (tmp_path / "public.pem").write_bytes(PUBLIC)
    (tmp_path / "private.pem").write_bytes(PRIVATE)
    image = build_image("9.1.0", 3000, seed=8)
    (tmp_path / "fw.bin").write_bytes(image)
    added = serve.cli("firmware", "key", "add", "acme-cli", str(tmp_path / "public.pem"))
    assert added.returncode == 0, added.stderr
    signed = serve.cli(
        "firmware", "sign", str(tmp_path / "fw.bin"), "--key", str(tmp_path / "private.pem")
    )
    assert signed.returncode == 0, signed.stderr
    (tmp_path / "fw.sig").write_text(signed.stdout)
    fw = str(tmp_path / "fw.bin")
    wrong = serve.cli("firmware", "upload", fw, "--version", "9.1.0", "--signature", "00" * 70)
    assert wrong.returncode == 2 and "trusted vendor key" in wrong.stderr  # 422: input
    assert serve.cli("firmware", "upload", fw, "--version", "9.1.0").returncode == 2
    uploaded = serve.cli(
        "firmware", "upload", fw, "--version", "9.1.0",
        "--signature-file", str(tmp_path / "fw.sig"), "--sku", "cam", "--json",
    )  # fmt: skip
    assert uploaded.returncode == 0, uploaded.stderr
    image_id = json.loads(uploaded.stdout)["id"]
    listed = serve.cli("firmware", "list", "--version", "9.1.0")
    assert image_id in listed.stdout and "cam" in listed.stdout
    marked = serve.cli("firmware", "quarantine", image_id, "--reason", "cli test")
    assert marked.returncode == 0 and "quarantined" in marked.stdout
    shown = serve.cli("firmware", "show", image_id)
    assert "QUARANTINED" in shown.stdout and "cli test" in shown.stdout
    missing = serve.cli("firmware", "show", "0123456789abcdef")
    assert missing.returncode == 1 and "no such image" in missing.stderr


def test_one_boot_looping_image_fails_every_device_that_installs_it(serve: Serve) -> None:
    """An image whose header says bootloop: devices download it (integrity fine), install it,
    fail to boot it and come back on the old version with Update Result 8 -- a permanent
    failure of the generation, while the same devices take a good image afterwards."""
    _trust(serve, "acme-loop")
    bad_image = build_image("6.6.6", 20_000, seed=6, bootloop=True)
    good_image = build_image("6.6.7", 20_000, seed=7)
    bad = _upload(serve, bad_image, "6.6.6", sign_image(bad_image, PRIVATE), 201)
    good = _upload(serve, good_image, "6.6.7", sign_image(good_image, PRIVATE), 201)
    profile = DeviceProfile().with_behaviour(install_time=0.2)

    async def case() -> None:
        api = Api(serve)
        try:
            async with DeviceFleet(serve.coap_uri, seed=6) as fleet:
                devices = [
                    fleet.device(i).endpoint
                    for i in fleet.spawn(4, prefix="fwx-loop-", profile=profile)
                ]
                await fleet.wait_registered(timeout=30)
                for image in (bad, good):
                    value = {"version": image["version"], "uri": image["uris"]["coap"]}
                    await api.put(
                        "/v1/state", {"endpoints": devices, "values": {"firmware": value}}
                    )

                    async def settled() -> bool:
                        rows = await _rows(api, devices)
                        return all(r["status"] in ("applied", "failed") for r in rows.values())

                    await eventually(settled, timeout=60)
                    rows = await _rows(api, devices)
                    expected = "failed" if image is bad else "applied"
                    assert {r["status"] for r in rows.values()} == {expected}, rows
                    for endpoint in devices:
                        running = await api.get(f"/v1/devices/{endpoint}/data/3/0/3")
                        result = await api.get(f"/v1/devices/{endpoint}/data/5/0/5")
                        if image is bad:
                            assert running["content"]["value"] == "1.0.0"
                            assert result["content"]["value"] == 8  # did not boot: reverted
                        else:
                            assert running["content"]["value"] == "6.6.7"
        finally:
            await api.aclose()

    run(case(), timeout=150)
