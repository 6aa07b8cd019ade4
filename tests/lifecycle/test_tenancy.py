"""Tenant isolation and roles, proven over EVERY route of the OpenAPI document.

The server is ``fleetloop serve``'s own composition root (:class:`cli.serve.Service`, so every
component any helper wires in is there) with real simulated devices over UDP: ``a-dev-1`` of
tenant ``tenant-a`` and ``b-dev-1`` of ``tenant-b`` (their tenants come from factory identities
imported through the API), plus tenant B's security record, bootstrap policy, observation and
operator token.

The enumeration fetches ``/openapi.json`` and calls every path and method with a tenant-A
*admin* token (the strongest scoped token, so a role check cannot hide a tenant leak),
substituting tenant B's endpoint / policy / observation / token ids into the path and plausible
bodies. Each call is made twice: against B's record and against a name that exists nowhere;
the two answers must be identical (after swapping the names) -- a B record is exactly as absent
as a missing one. Answers of routes without an id must not mention any B record. Afterwards B's
records (server side and on the device) must be unchanged. Routes added later by other
components are enumerated too; the test also asserts it covered them all.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.serve import Service
from cli.settings import Listen, ServeSettings
from simulators.runner import SimulatedDevice
from tests.lifecycle.api.harness import apn_template

A, B = "tenant-a", "tenant-b"
A_DEV, B_DEV, NOBODY = "a-dev-1", "b-dev-1", "zz-nobody-1"
A_POLICY, B_POLICY, NO_POLICY = "a-policy", "b-policy", "zz-no-policy"
B_GROUP, NO_GROUP = "b-group", "zz-no-group"
SKIPPED = {("/health", "get")}  # tokenless liveness: status, version and a device count only

IDENTITIES = (
    "endpoint,serial,sku,tenant,region,security_mode\n"
    f"{A_DEV},SN-A1,T1,{A},eu-west,nosec\n"
    f"{B_DEV},SN-B1,T1,{B},eu-west,nosec\n"
    "b-dev-2,SN-B2,T1,tenant-b,eu-west,nosec\n"
    "a-dev-2,SN-A2,T1,tenant-a,eu-west,nosec\n"
)


def policy_doc(tenant: str) -> dict[str, Any]:
    return {
        "match": {"tenant": tenant},
        "servers": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 1, "credentials": "nosec"}],
        "description": f"{tenant} policy",
    }


@dataclass
class World:
    service: Service
    url: str
    admin: httpx.AsyncClient
    devices: dict[str, SimulatedDevice] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # name -> token text
    token_ids: dict[str, str] = field(default_factory=dict)
    b_observation: str = ""
    b_audit_seq: str = ""

    def client(self, name: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.tokens[name]}"},
            timeout=20.0,
        )

    @property
    def coap_uri(self) -> str:
        address = self.service.server.coap_address if self.service.server else None
        assert address is not None
        return f"coap://127.0.0.1:{address[1]}"

    async def add_device(self, endpoint: str) -> SimulatedDevice:
        device = SimulatedDevice(endpoint, self.coap_uri, template=apn_template())
        await device.start()
        await device.wait_registered()
        self.devices[endpoint] = device
        return device


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Any:
    got = await response
    assert got.status_code == status, f"{got.request.method} {got.request.url}: {got.text}"
    return got.json()


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = ServeSettings(
        data_dir=tmp_path / "data",
        coap=Listen("127.0.0.1", 0),
        coaps=None,
        bs_coap=None,
        bs_coaps=None,
        api=Listen("127.0.0.1", 0),
        log_level="warning",
    )
    service = Service(settings)
    info = await service.start()
    admin = httpx.AsyncClient(
        base_url=info.url, headers={"Authorization": f"Bearer {info.token}"}, timeout=20.0
    )
    w = World(service, info.url, admin)
    try:
        await ok(
            admin.post("/v1/identities/import", json={"content": IDENTITIES, "source": "f.csv"})
        )
        for endpoint in (A_DEV, B_DEV):
            await ok(admin.put(f"/v1/security/{endpoint}", json={"allow_nosec": True}))
            await w.add_device(endpoint)
        await ok(admin.put(f"/v1/bootstrap/policies/{A_POLICY}", json={"policy": policy_doc(A)}))
        await ok(admin.put(f"/v1/bootstrap/policies/{B_POLICY}", json={"policy": policy_doc(B)}))
        for name, tenant in ((B_GROUP, B), ("a-group", A)):
            await ok(
                admin.post("/v1/groups", json={"name": name, "select": "", "tenant": tenant}), 201
            )
        observed = await ok(admin.post(f"/v1/devices/{B_DEV}/observe/3/0/9"))
        w.b_observation = observed["observation_id"]
        for name, role, tenants in [
            ("a-admin", "admin", [A]),
            ("a-operator", "operator", [A]),
            ("a-viewer", "viewer", [A]),
            ("b-admin", "admin", [B]),
        ]:
            made = await ok(
                admin.post("/v1/tokens", json={"name": name, "role": role, "tenants": tenants}), 201
            )
            w.tokens[name] = made["token"]
            w.token_ids[name] = made["id"]
        assert service.store is not None
        store = service.store
        about_b = await store.read(lambda tx: store.audit.list(tx, endpoints=[B_DEV]))
        assert about_b, "the audit log has no record about tenant B's device"
        w.b_audit_seq = str(about_b[-1].seq)
        yield w
    finally:
        for device in w.devices.values():
            await device.stop(timeout=1.0)
        await admin.aclose()
        await service.stop()


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 90.0) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


# -- B's records, before and after ----------------------------------------------------------------

STABLE_RESOURCES = ("/1/0/1", "/1/0/2", "/1/0/3", "/3/0/14", "/3/0/15", "/11/0/0")


def on_device(device: SimulatedDevice, path: str) -> str:
    """The value at ``path`` on the device itself, or what is wrong with the path (an APN
    instance a leaked Create would make, or a resource a leaked Delete would remove)."""
    try:
        return repr(device.read(path))
    except Exception as err:
        return type(err).__name__


async def b_snapshot(w: World) -> dict[str, Any]:
    """Everything of tenant B that a leak could change, read with the serve token and on the
    device itself (timestamps that move by themselves left out)."""
    admin = w.admin
    device = await ok(admin.get(f"/v1/devices/{B_DEV}"))
    identity = await ok(admin.get(f"/v1/identities/{B_DEV}"))
    identity.pop("bootstrap", None)
    tokens = (await ok(admin.get("/v1/tokens")))["items"]
    return {
        "registration": {
            k: device[k] for k in ("registration_id", "lifetime", "binding", "queue_mode")
        },
        "security": device["security"],
        "observations": sorted(o["observation_id"] for o in device["observations"]),
        "identity": identity,
        "identity_2": await ok(admin.get("/v1/identities/b-dev-2")),
        "policy": (await ok(admin.get(f"/v1/bootstrap/policies/{B_POLICY}")))["versions"],
        "group": await ok(admin.get(f"/v1/groups/{B_GROUP}")),
        "b_token": [t for t in tokens if t["name"] == "b-admin"],
        "on_device": {p: on_device(w.devices[B_DEV], p) for p in STABLE_RESOURCES},
    }


# -- request synthesis ----------------------------------------------------------------------------

PARAM = re.compile(r"\{(\w+)(?::path)?\}")


def b_values(w: World, template: str) -> dict[str, str]:
    """B's record for each kind of path parameter of ``template``."""
    if template.startswith("/v1/bootstrap/policies"):
        name = B_POLICY
    elif template.startswith("/v1/groups"):
        name = B_GROUP
    else:
        name = "zz-shared-probe"  # e.g. config bundles: shared by design, no B record
    return {
        "endpoint": B_DEV,
        "path": "3/0/14",
        "name": name,
        "observation_id": w.b_observation,
        "token": w.token_ids["b-admin"],
        "request_id": "1",
        "seq": w.b_audit_seq,
        # Shared artifacts (firmware images, bundle versions) have no tenant; a campaign's
        # tenancy is tested in tests/lifecycle/api/test_campaign_routes.py against real
        # campaigns of two tenants: here both requests name the same absent record.
        "image": "zz-shared-probe",
        "version": "9.9.9",
        "cid": "zz-no-campaign",
    }


def missing_values(w: World) -> dict[str, str]:
    return {
        B_DEV: NOBODY,
        B_POLICY: NO_POLICY,
        B_GROUP: NO_GROUP,
        w.b_observation: "zz-no-observation",
        w.token_ids["b-admin"]: "000000000000",
        w.b_audit_seq: "999999",
    }


def fill_path(template: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        return B_DEV  # a parameter this test does not know yet: try B's endpoint name

    return PARAM.sub(value, template)


KNOWN_BODIES: dict[tuple[str, str], Any] = {
    # refused alike for any name (an answer without digits: the swap of B's audit seq
    # would rewrite a bare number in it)
    ("put", "/v1/apn-profiles/{name}"): {"apns": ["not an apn!"]},
    ("put", "/v1/devices/{endpoint}/data/{path}"): {"value": "+09:00"},
    ("patch", "/v1/devices/{endpoint}/data/{path}"): {"value": "+09:00"},
    ("post", "/v1/devices/{endpoint}/data/{path}"): {"resources": [{"id": 0, "value": "x"}]},
    ("post", "/v1/devices/{endpoint}/execute/{path}"): {},
    ("put", "/v1/devices/{endpoint}/attributes/{path}"): {"pmin": 5},
    ("post", "/v1/devices/{endpoint}/composite/read"): {"paths": ["/3/0/14"]},
    ("post", "/v1/devices/{endpoint}/composite/observe"): {"paths": ["/3/0/14"]},
    ("post", "/v1/devices/{endpoint}/composite/write"): {
        "content": [{"path": "/3/0/14", "value": "+09:00"}]
    },
    ("put", "/v1/security/{endpoint}"): {"allow_nosec": True},
    ("post", "/v1/identities/import"): {
        "content": f"endpoint,tenant,security_mode\nb-dev-9,{B},nosec\n",
        "source": "sneaky.csv",
    },
    ("patch", "/v1/identities/{endpoint}"): {"region": "moved"},
    ("post", "/v1/identities/{endpoint}/revoke"): {"reason": "sneaky"},
    ("put", "/v1/bootstrap/policies/{name}"): {"policy": policy_doc(B)},
    ("post", "/v1/bootstrap/rebootstrap/{endpoint}"): {},
    ("post", "/v1/tokens"): {"name": "sneaky", "role": "admin", "tenants": [B]},
}


def _resolve(spec: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in spec:
        node: Any = doc
        for part in spec["$ref"].lstrip("#/").split("/"):
            node = node[part]
        spec = node
    return spec


def synthesize(spec: dict[str, Any], doc: dict[str, Any], name: str = "") -> Any:
    """A plausible value for a JSON schema, aimed at tenant B (for routes this test does not
    know by name: later components' routes)."""
    spec = _resolve(spec, doc)
    if spec.get("examples"):
        return spec["examples"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in spec:
            options = [o for o in spec[key] if _resolve(o, doc).get("type") != "null"]
            return synthesize(options[0], doc, name) if options else None
    kind = spec.get("type")
    lowered = name.lower()
    if kind == "object" or "properties" in spec:
        props = spec.get("properties", {})
        return {k: synthesize(v, doc, k) for k, v in props.items() if k in spec.get("required", [])}
    if kind == "array":
        return [synthesize(spec.get("items", {}), doc, name)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if "enum" in spec:
        return spec["enum"][0]
    if "tenant" in lowered:
        return B
    if "select" in lowered or "query" in lowered:
        return f"tenant={B}"
    if "endpoint" in lowered or "device" in lowered:
        return B_DEV
    return "a-probe"  # a name of the caller's own (it is echoed back: not a B marker)


def body_for(method: str, path: str, operation: dict[str, Any], doc: dict[str, Any]) -> Any:
    key = (method, path.replace(":path", ""))
    if key in KNOWN_BODIES:
        return KNOWN_BODIES[key]
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    return None if schema is None else synthesize(schema, doc)


def normalised(response: httpx.Response, swap: dict[str, str]) -> tuple[int, str]:
    """Status and body with B's ids replaced by the missing ones (whole words only: the
    audit sequence number is a bare number)."""
    text = response.text
    for mine, theirs in swap.items():
        text = re.sub(rf"(?<![\w-]){re.escape(mine)}(?![\w-])", theirs, text)
    return response.status_code, text


def b_markers(w: World) -> list[str]:
    return [B_DEV, "b-dev-2", B_POLICY, B_GROUP, w.b_observation, w.token_ids["b-admin"], "SN-B1"]


# -- the tests ------------------------------------------------------------------------------------


def test_a_tenant_a_token_sees_and_changes_nothing_of_tenant_b_on_every_route(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with world(tmp_path) as w:
            before = await b_snapshot(w)
            async with w.client("a-admin") as a:
                doc = await ok(a.get("/openapi.json"))
                covered: set[tuple[str, str]] = set()
                leaks: list[str] = []
                swap = missing_values(w)
                for template, operations in doc["paths"].items():
                    for method, operation in operations.items():
                        if (template, method) in SKIPPED:
                            covered.add((template, method))
                            continue
                        if template == "/v1/events" or template.endswith("/events"):
                            # streamed: /v1/events has its own test below, a campaign's
                            # stream is scoped in tests/lifecycle/api/test_campaign_routes.py
                            covered.add((template, method))
                            continue
                        body = body_for(method, template, operation, doc)
                        b_vals = b_values(w, template)
                        has_ids = bool(PARAM.search(template))
                        url = fill_path(template, b_vals)
                        got = await a.request(method.upper(), url, json=body)
                        where = f"{method.upper()} {template}"
                        if has_ids:
                            missing_url = fill_path(
                                template, {k: swap.get(v, v) for k, v in b_vals.items()}
                            )
                            absent = await a.request(method.upper(), missing_url, json=body)
                            if normalised(got, swap) != normalised(absent, {}):
                                leaks.append(
                                    f"{where}: B's record answers {got.status_code} "
                                    f"{got.text[:300]!r}, a missing one {absent.status_code} "
                                    f"{absent.text[:300]!r}"
                                )
                        elif got.is_success:
                            shown = [m for m in b_markers(w) if m in got.text]
                            if shown:
                                leaks.append(f"{where}: 2xx mentions {shown}: {got.text[:300]!r}")
                        covered.add((template, method))
                everything = {(p, m) for p, ops in doc["paths"].items() for m in ops}
                assert covered == everything
                assert len(everything) >= 40, sorted(everything)
                assert not leaks, "\n".join(leaks)
            after = await b_snapshot(w)
            assert after == before
            assert w.service.server is not None
            assert w.service.server.registration(B_DEV) is not None

    run(scenario, 120)


def test_a_tenant_a_token_still_works_on_its_own_devices(tmp_path: Path) -> None:
    """The isolation above is not a token that sees nothing: A's records are all there."""

    async def scenario() -> None:
        async with world(tmp_path) as w, w.client("a-viewer") as a:
            assert [d["endpoint"] for d in (await ok(a.get("/v1/devices")))["items"]] == [A_DEV]
            assert (await ok(a.get(f"/v1/devices/{A_DEV}")))["endpoint"] == A_DEV
            read = await ok(a.get(f"/v1/devices/{A_DEV}/data/3/0/0"))
            assert read["status"] == "success"
            identities = (await ok(a.get("/v1/identities")))["items"]
            assert sorted(i["endpoint"] for i in identities) == [A_DEV, "a-dev-2"]
            assert [s["endpoint"] for s in (await ok(a.get("/v1/security")))["items"]] == [A_DEV]
            policies = (await ok(a.get("/v1/bootstrap/policies")))["items"]
            assert [p["name"] for p in policies] == [A_POLICY]
            assert (await ok(a.get(f"/v1/bootstrap/status/{A_DEV}")))["endpoint"] == A_DEV
            assert (await a.get(f"/v1/devices/{B_DEV}")).status_code == 404
            # and an all-tenant viewer sees both tenants
            both = (await ok(w.admin.get("/v1/devices")))["items"]
            assert sorted(d["endpoint"] for d in both) == [A_DEV, B_DEV]

    run(scenario)


def test_the_event_stream_carries_only_the_events_of_visible_devices(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with world(tmp_path) as w, w.client("a-viewer") as a:
            seen: list[tuple[str, Any]] = []
            ready = asyncio.Event()

            async def listen() -> None:
                async with a.stream("GET", "/v1/events", timeout=None) as response:
                    assert response.status_code == 200
                    event = "message"
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            event = line[len("event: ") :]
                        elif line.startswith("data: "):
                            seen.append((event, json.loads(line[len("data: ") :])))
                            if event == "ready":
                                ready.set()

            task = asyncio.create_task(listen())
            try:
                await asyncio.wait_for(ready.wait(), 10)
                await w.add_device("b-dev-2")  # B first: its events would arrive first
                await ok(w.admin.get(f"/v1/devices/{B_DEV}/data/3/0/9"))
                await w.add_device("a-dev-2")
                deadline = asyncio.get_running_loop().time() + 10
                while not any(d.get("endpoint") == "a-dev-2" for _, d in seen):
                    assert asyncio.get_running_loop().time() < deadline, seen
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            endpoints = {d.get("endpoint") for e, d in seen if e != "ready"}
            assert endpoints == {"a-dev-2"}, seen

    run(scenario)


def test_roles_a_viewer_changes_nothing_and_an_operator_mints_no_tokens(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            world(tmp_path) as w,
            w.client("a-viewer") as viewer,
            w.client("a-operator") as operator,
        ):
            doc = await ok(viewer.get("/openapi.json"))
            checked = 0
            for template, operations in doc["paths"].items():
                for method, operation in operations.items():
                    values = {**b_values(w, template), "endpoint": A_DEV, "name": A_POLICY}
                    declared = operation.get("x-fleetloop-role")
                    url = fill_path(template, values)
                    body = body_for(method, template, operation, doc)
                    if method != "get":
                        got = await viewer.request(method.upper(), url, json=body)
                        assert got.status_code == 403, (method, template, got.text)
                        assert got.json()["status"] == "forbidden"
                        checked += 1
                    if declared == "admin":
                        got = await operator.request(method.upper(), url, json=body)
                        assert got.status_code == 403, (method, template, got.text)
                        checked += 1
            assert checked >= 20
            minted = await operator.post(
                "/v1/tokens", json={"name": "mine", "role": "viewer", "tenants": [A]}
            )
            assert minted.status_code == 403
            assert "needs admin" in minted.json()["message"]
            assert (await operator.get("/v1/tokens")).status_code == 403
            # an operator can change its own tenant's devices
            wrote = await operator.put(f"/v1/devices/{A_DEV}/data/3/0/14", json={"value": "+02:00"})
            assert wrote.status_code == 200, wrote.text

    run(scenario)


def test_a_revoked_token_is_refused_at_once_and_a_scoped_admin_mints_only_inside(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with world(tmp_path) as w, w.client("a-admin") as a:
            made = await ok(
                a.post("/v1/tokens", json={"name": "a-bot", "role": "viewer", "tenants": [A]}), 201
            )
            assert made["token"].startswith(f"flt_{made['id']}_")
            wider = await a.post("/v1/tokens", json={"name": "x", "role": "viewer"})
            assert wider.status_code == 403
            assert wider.json()["field"] == "body.tenants"
            listed = [t["name"] for t in (await ok(a.get("/v1/tokens")))["items"]]
            assert sorted(listed) == ["a-admin", "a-bot", "a-operator", "a-viewer"]
            assert all("token" not in t for t in (await ok(a.get("/v1/tokens")))["items"])
            bot = httpx.AsyncClient(
                base_url=w.url, headers={"Authorization": f"Bearer {made['token']}"}
            )
            async with bot:
                assert (await bot.get("/v1/devices")).status_code == 200
                await ok(a.delete("/v1/tokens/a-bot"))
                refused = await bot.get("/v1/devices")
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == "Bearer"
            records = await w.service.store.read(  # type: ignore[union-attr]
                lambda tx: w.service.store.audit.list(tx, action_prefix="token.")  # type: ignore[union-attr]
            )
            bot_records = [r for r in records if r.subject == f"token:{made['id']}"]
            assert [(r.action, r.actor, r.token_id) for r in bot_records] == [
                ("token.create", "operator:a-admin", w.token_ids["a-admin"]),
                ("token.revoke", "operator:a-admin", w.token_ids["a-admin"]),
            ]

    run(scenario)
