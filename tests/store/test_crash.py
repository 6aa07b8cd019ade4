"""Crash semantics: a write whose ``await`` returned is in the database after the process dies.

A child process writes through the group-commit writer, awaits the commits, prints what it
was acknowledged, and ends with ``os._exit`` -- no close, no flush, no atexit, with more writes
still queued behind it, as if the server crashed right after acknowledging the devices. The
parent reopens the database and finds every acknowledged write.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO
from tests.store.conftest import StoreTarget

CHILD = r"""
import asyncio, json, os, sys
from lwm2m.store import (
    Address, EndpointSecurity, Identity, NewRegistration, PskCredential, ReportedValue, Store,
)
from lwm2m.model import Path, Value

store = Store.open(sys.argv[1], sys.argv[2])
store.create_schema(now=0)

def register(i):
    new = NewRegistration(f"ep-{i:03d}", 300, Address("10.0.0.1", 5683), Identity.psk(f"id-{i}"))
    return lambda tx: store.registrations.register(tx, new, 1.0)[0]

async def main():
    regs = await asyncio.gather(*(store.write(register(i)) for i in range(100)))
    sec = EndpointSecurity("ep-000", psk=PskCredential("id-0", b"key-0"))
    await store.write(lambda tx: store.security.set(tx, sec, 1.0))
    value = ReportedValue("ep-000", Path.of(3, 0, 9), Value.integer(42), at=2.0)
    await store.record([value], wait=True)
    for i in range(100, 400):  # still queued (or mid-commit) when the process dies
        store.write_nowait(register(i))
    print(json.dumps({r.endpoint: r.id for r in regs}), flush=True)
    os._exit(0)

asyncio.run(main())
"""


def test_acknowledged_writes_survive_the_process_dying(target: StoreTarget) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, target.url, str(target.data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    acknowledged: dict[str, str] = json.loads(child.stdout.strip().splitlines()[-1])
    assert len(acknowledged) == 100

    with target.open() as store:
        store.create_schema(now=10)  # what a restarting server does; must not disturb data
        with store.transaction() as tx:
            for endpoint, reg_id in acknowledged.items():
                reg = store.registrations.get(tx, reg_id)
                assert reg is not None and reg.endpoint == endpoint
            security = store.security.get(tx, "ep-000")
            assert security is not None and security.psk is not None
            assert security.psk.key == b"key-0"
            latest = store.telemetry.latest(tx, "ep-000")
            assert [v.value.value for v in latest] == [42]
            # the fire-and-forget registrations may or may not have made it
            assert 100 <= store.registrations.count(tx) <= 400
