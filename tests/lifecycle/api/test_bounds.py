"""Integers beyond what the store can hold, in paths, queries and bodies, are refused as 422
naming the parameter -- never a 500 from the driver's OverflowError or Python's int-to-str
limit (issue 14 item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lifecycle.api.harness import run, running_api

HUGE = "9223372036854775808"  # 2**63
DIGITS = "9" * 5000


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("DELETE", f"/v1/queue/{HUGE}"),
        ("DELETE", f"/v1/queue/{DIGITS}"),
        ("GET", f"/v1/audit/records/{HUGE}/proof"),
        ("GET", f"/v1/audit?after={HUGE}"),
        ("GET", f"/v1/audit?cursor={HUGE}"),
        ("GET", f"/v1/audit?cursor={DIGITS}"),
        ("GET", f"/v1/audit/verify?tree_size={HUGE}"),
    ],
    ids=["queue-2^63", "queue-5000-digits", "proof", "after", "cursor", "cursor-5000", "verify"],
)
def test_an_integer_beyond_64_bits_in_a_path_or_query_is_a_422(
    tmp_path: Path, method: str, url: str
) -> None:
    async def case() -> None:
        async with running_api(tmp_path) as api:
            response = await api.http.request(method, url)
            assert response.status_code == 422, (url[:80], response.status_code, response.text)
            assert len(response.text) < 2000

    run(case)


def test_a_5000_digit_integer_written_to_a_device_is_refused(tmp_path: Path) -> None:
    async def case() -> None:
        async with running_api(tmp_path) as api, api.device("big-1") as device:
            await device.wait_registered()
            response = await api.http.put("/v1/devices/big-1/data/1/0/1", json={"value": DIGITS})
            assert response.status_code in (400, 422), response.text[:300]
            assert len(response.text) < 2000
            response = await api.http.put("/v1/devices/big-1/data/1/0/1", json={"value": 2**70})
            assert response.status_code in (400, 422), response.text[:300]

    run(case)
