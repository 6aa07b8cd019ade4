"""Issue 14 item 9: answers of a real ``fleetloop serve`` that said the wrong thing --
``GET /devices/<unknown>/queue`` was 200 ``[]`` (as if the device existed) and
``allow_nosec: 0`` was taken as a boolean."""

from __future__ import annotations

from pathlib import Path

from tests.hardening.serve_proc import ServeProcess


def test_an_unknown_queue_is_404_and_allow_nosec_takes_only_json_booleans(
    tmp_path: Path,
) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    try:
        with server.api() as api:
            queue = api.get("/devices/nobody-1/queue")
            assert queue.status_code == 404, queue.text
            assert queue.json()["status"] == "unknown_endpoint"
            for value in (0, 1, "yes", "true", None):
                answer = api.put("/security/nosec-1", json={"allow_nosec": value})
                assert answer.status_code == 422, (value, answer.text)
                assert "allow_nosec" in answer.text
            granted = api.put("/security/nosec-1", json={"allow_nosec": True})
            assert granted.status_code == 200, granted.text
            assert granted.json()["allow_nosec"] is True
    finally:
        assert server.stop() == 0
