"""One quarantine for firmware images, on SQLite and PostgreSQL: the engine's quarantine marks
the image in the firmware repository, a repository quarantine counts for campaigns when the
engine loads, and lifting it through the engine lifts both."""

from __future__ import annotations

import asyncio

from lifecycle.artifacts.firmware import FirmwareRepository, new_vendor_key, sign_image
from lifecycle.campaigns.component import CampaignComponent
from lifecycle.service import LifecycleService
from lwm2m.store import Store
from simulators.device.firmware import build_image
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)
from tests.lifecycle.campaigns.test_engine import (
    _records,
    rig,
    store,  # noqa: F401  (fixture)
)

PRIVATE, PUBLIC = new_vendor_key()


def _publish(db: Store, version: str) -> str:
    repo = FirmwareRepository(db.audit)
    body = build_image(version, 1024, seed=len(version))
    with db.transaction() as tx:
        if not repo.vendor_keys(tx):
            repo.add_vendor_key(tx, "acme", PUBLIC.decode(), actor="op", now=1.0)
        image = repo.publish(
            tx, body, version=version, signature=sign_image(body, PRIVATE), actor="op", now=1.0
        )
    return image.id


def _quarantined_in_repo(db: Store, image: str) -> bool:
    found = db.read_sync(lambda tx: FirmwareRepository().image(tx, image))
    return found is not None and found.quarantined


def test_one_quarantine_between_the_engine_and_the_firmware_repository(
    store: Store,  # noqa: F811
) -> None:
    async def case() -> None:
        engine_side = _publish(store, "5.0.0")
        repo_side = _publish(store, "5.0.1")
        # quarantined in the repository only (no engine running)
        with store.transaction() as tx:
            FirmwareRepository(store.audit).quarantine(
                tx, repo_side, reason="field report", actor="op", now=2.0
            )
        async with rig(store, _records("qu-", {"eu": 1})) as r:
            # loaded: the repository's quarantine is the engine's
            assert r.campaigns.quarantined()[repo_side]["reason"] == "field report"
            # the engine's quarantine reaches the repository
            await r.campaigns.quarantine(engine_side, actor="op", reason="boot loop")
            assert _quarantined_in_repo(store, engine_side)
            # lifted through the engine: lifted in both
            assert await r.campaigns.unquarantine(repo_side, actor="op")
            assert repo_side not in r.campaigns.quarantined()
            assert not _quarantined_in_repo(store, repo_side)
            # and it stays lifted after a restart
            await r.campaigns.stop()
            again = CampaignComponent(r.server, store, r.state, r.inventory, coalesce_s=0.0)
            again.install(LifecycleService(r.server))
            again.start()
            await again.ready()
            r.campaigns = again
            assert set(again.quarantined()) == {engine_side}

    asyncio.run(asyncio.wait_for(case(), 60))
