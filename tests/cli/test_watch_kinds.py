"""``fleetloop watch --kind ...``: campaign and audit events in the one event stream.

A real ``fleetloop serve`` composition root (:mod:`tests.lifecycle.api.campaign_world`) runs a
campaign over a simulated fleet; ``fleetloop watch`` runs as its own process, finding the
server through the data directory, and must show the campaign's waves starting and ending,
its completion, and the audit records the campaign and the operator wrote -- each only in the
stream that asked for its kind.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from tests.cli.harness import invoke
from tests.lifecycle.api.campaign_world import CampaignWorld, campaign_world, fast_spec


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CampaignWorld]:
    with campaign_world(tmp_path_factory.mktemp("watch-kinds") / "data") as running:
        yield running


class Watch:
    """``fleetloop watch ARGS --json`` as a process; its lines read on a thread."""

    def __init__(self, world: CampaignWorld, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
        env["FLEETLOOP_DATA_DIR"] = str(world.data_dir)
        env["FLEETLOOP_CONTEXTS"] = str(world.data_dir / "no-contexts.json")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "watch", *args, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None and self.process.stdout is not None
        assert "watching events" in self.process.stderr.readline()
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(json.loads(line))

    def until(self, found: Callable[[list[dict[str, Any]]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not found(self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"not seen in time; got {[e['event'] for e in self.seen]}"
            try:
                self.seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                continue

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM ends watch cleanly
        assert self.process.wait(10) == 0
        while not self.lines.empty():
            self.seen.append(self.lines.get())


def test_watch_streams_campaign_waves_and_audit_records_by_kind(world: CampaignWorld) -> None:
    campaigns = Watch(world, "--kind", "campaign")
    audit = Watch(world, "--kind", "audit")
    both = Watch(world, "--kind", "registration,campaign", "--kind", "audit")
    try:
        made = world.api("POST", "/v1/campaigns", json=fast_spec("watched", "region=us", "cw-v2"))
        cid = made["id"]
        world.until(cid, ("completed",))

        def completed(seen: list[dict[str, Any]]) -> bool:
            return any(
                e["event"] == "campaign_state" and e["data"]["state"] == "completed" for e in seen
            )

        campaigns.until(completed)
        waves = [
            (e["data"]["wave"], e["data"]["state"])
            for e in campaigns.seen
            if e["event"] == "campaign_wave"
        ]
        assert (0, "running") in waves and (0, "done") in waves  # the canary: started, gated
        assert (1, "running") in waves and (1, "done") in waves
        assert all(e["data"]["campaign"] == cid for e in campaigns.seen)
        assert {e["event"] for e in campaigns.seen} <= {
            "campaign_wave",
            "campaign_state",
            "campaign_progress",
        }

        def audited(seen: list[dict[str, Any]]) -> bool:
            return {"campaign.create", "campaign.wave_done"} <= {
                e["data"]["action"] for e in seen if e["event"] == "audit"
            }

        audit.until(audited)
        assert {e["event"] for e in audit.seen} == {"audit"}
        record = next(e["data"] for e in audit.seen if e["data"]["action"] == "campaign.create")
        assert record["subject"] == f"campaign:{cid}" and record["seq"] >= 1
        # one more append, by an operator through another command: it reaches the stream too
        labelled = invoke(
            world.data_dir, "inventory", "label", "--select", "endpoint=cw-us-000009", "--add", "w"
        )
        assert labelled.exit_code == 0, labelled.output
        audit.until(lambda seen: any(e["data"]["action"].startswith("inventory.") for e in seen))

        both.until(lambda seen: completed(seen) and audited(seen))
        assert {e["event"] for e in both.seen} >= {"campaign_wave", "audit"}
    finally:
        for watch in (campaigns, audit, both):
            if watch.process.poll() is None:
                watch.stop()


def test_an_unknown_kind_is_a_usage_error_naming_the_kinds(world: CampaignWorld) -> None:
    result = invoke(world.data_dir, "watch", "--kind", "registration,bogus")
    assert result.exit_code == 2
    assert "'bogus' is not a kind of event" in result.output
    assert "registration, notification, queue, campaign, audit" in result.output
    refused = world.request("GET", "/v1/events", params={"kind": "bogus"})
    assert refused.status_code == 422 and refused.json()["field"] == "query.kind[0]"
