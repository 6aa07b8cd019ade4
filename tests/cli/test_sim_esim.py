"""``fleetloop sim esim-pki`` and ``fleetloop sim run --esim`` against a real serve with its eIM
(in a background thread, as ``fleetloop serve`` starts it): the lab's eUICCs are imported and
linked to the simulated devices, their IPAs poll the eIM over CoAP, and an enable queued for
one of them switches its profile -- the device re-attaches and reports the new carrier's
network in /4/0/10-9."""

from __future__ import annotations

import json
from pathlib import Path

from cli.settings import Listen
from simulators.esim.lab import ICCID_A, ICCID_B, load_lab_pki
from tests.cli.harness import background_service, invoke


def _run(data: Path, lab: Path, uri: str, seconds: float) -> dict[str, object]:
    done = invoke(
        data,
        "sim",
        "run",
        "--devices",
        "2",
        "--server",
        uri,
        "--esim",
        str(lab),
        "--esim-poll",
        "0.3",
        "--duration",
        str(seconds),
        "--json",
    )
    assert done.exit_code == 0, done.output
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def test_sim_esim_devices_are_imported_poll_over_coap_and_switch(tmp_path: Path) -> None:
    lab, data = tmp_path / "lab", tmp_path / "data"
    made = invoke(data, "sim", "esim-pki", str(lab))
    assert made.exit_code == 0, made.output
    assert (lab / "ci.key").stat().st_mode & 0o077 == 0
    again = invoke(data, "sim", "esim-pki", str(lab))
    assert again.exit_code == 2 and "already holds a lab PKI" in again.output
    load_lab_pki(lab)

    missing = invoke(
        data, "sim", "run", "--devices", "1", "--server", "coap://127.0.0.1:9", "--esim",
        str(tmp_path / "nowhere"),
    )  # fmt: skip
    assert missing.exit_code == 2 and "fleetloop sim esim-pki" in missing.output

    settings = {
        "esipa_https": Listen("127.0.0.1", 0),
        "eim_id": "eim.lab",
        "eim_ci": lab / "ci.pem",
    }
    with background_service(data, **settings) as serve:
        first = _run(data, lab, serve.coap_uri, 2.0)
        assert first["esim"] == {"enabled": {ICCID_A: 2}, "switches": 0, "errors": 0}
        listed = invoke(data, "esim", "list", "--json")
        assert listed.exit_code == 0, listed.output
        linked = sorted(e["endpoint"] for e in json.loads(listed.stdout)["items"])
        assert linked == ["sim-000001", "sim-000002"]

        queued = invoke(data, "esim", "enable", "sim-000001", ICCID_B)
        assert queued.exit_code == 0, queued.output
        second = _run(data, lab, serve.coap_uri, 4.0)  # the same eUICCs: imported again, harmless
        esim = second["esim"]
        assert isinstance(esim, dict)
        assert esim["enabled"] == {ICCID_A: 1, ICCID_B: 1}, esim
        assert esim["switches"] == 1
        shown = json.loads(invoke(data, "esim", "show", "sim-000001", "--json").stdout)
        states = {p["iccid"]: p["state"] for p in shown["profiles"]}
        assert states.get(ICCID_B) == "enabled", shown["profiles"]
