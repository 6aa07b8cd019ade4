"""Replay the server's side of the captured interop runs (../shared/interop) against the
simulated device configured like the client that was captured, and compare response codes and
Content-Formats with what the real client answered.

Where the simulator answers differently on purpose, the vector is listed in ``KNOWN`` with the
reason: different device content, or a real-client bug the simulator does not copy.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Any

import pytest
from aiocoap import Message

from objects import builtin_definition
from simulators.device.config import ClientConfig
from simulators.device.defaults import default_template
from simulators.device.formats import ANJAY, WAKAAMA
from simulators.device.template import ObjectTemplate
from tests.simulators.pair import Pair, code

RUNS = {
    "anjay-1.2": ClientConfig(formats=ANJAY),
    "anjay-1.1-fallback": ClientConfig(formats=ANJAY, lwm2m_version="1.1"),
    "anjay-1.0": ClientConfig(formats=ANJAY, lwm2m_version="1.0"),
    "wakaama-udp": ClientConfig(formats=WAKAAMA, lwm2m_version="1.1"),
}

KNOWN = {
    "/3/0/12 execute": "the Anjay demo does not implement Reset Error Code; the simulator does",
    "wakaama 5.00": "wakaama answers 5.00 for Accept 42 on a string and resource-instance reads",
    "wakaama 5.01": "wakaama's device lacks Timezone (15); the simulator has it",
    "wakaama 4.06 write": "wakaama says 4.06 for an unsupported request format; TS says 4.15",
    "wakaama create /1": "wakaama lets a DM server create Server instances; the simulator (as "
    "Anjay) refuses",
    "wakaama object 31024": "wakaama's test object is not part of the simulated device",
}


def _known(run: str, exchange: dict[str, Any]) -> str | None:
    request = exchange["request"]
    path = request.get("uri_path") or ""
    theirs = exchange["response"]["code"]
    if path == "/3/0/12" and request["code"] == "0.02":
        return KNOWN["/3/0/12 execute"]
    if run.startswith("wakaama"):
        if theirs == "5.00":
            return KNOWN["wakaama 5.00"]
        if theirs == "5.01":
            return KNOWN["wakaama 5.01"]
        if theirs == "4.06" and request["code"] == "0.02":
            return KNOWN["wakaama 4.06 write"]
        if path == "/1" and request["code"] == "0.02":
            return KNOWN["wakaama create /1"]
        if path.startswith("/31024"):
            return KNOWN["wakaama object 31024"]
    return None


def _template_for(run: str) -> Any:
    """The default device, with the Server instance numbered as the captured client's."""
    template = default_template()
    if not run.startswith("anjay"):
        return template
    server = template.objects[1]
    renumbered = ObjectTemplate(
        builtin_definition(1), {1: server.instances[0]}, handlers=server.handlers
    )
    return template.replace(renumbered)


def _exchanges(shared: FsPath, run: str) -> list[dict[str, Any]]:
    vectors = json.loads((shared / "interop" / "interop-vectors.json").read_text())
    return [
        e
        for e in vectors
        if e["run"] == run
        and e["direction"] == "server->client"
        and e["response"] is not None
        and not e["description"].startswith("Notify")
    ]


def _content_format(message: Message) -> int | None:
    cf = message.opt.content_format
    return None if cf is None else int(cf)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_the_simulator_answers_like_the_captured_client(shared_dir: FsPath, run: str) -> None:
    pair = Pair(config=RUNS[run], template=_template_for(run))
    pair.start()
    compared, differences = 0, []
    for exchange in _exchanges(shared_dir, run):
        captured = Message.decode(bytes.fromhex(exchange["request"]["raw_hex"]))
        message = Message(code=captured.code, payload=captured.payload)
        for option in captured.opt.option_list():
            message.opt.add_option(option)
        handle = pair.send(message)
        pair.run_until(lambda h=handle: h in pair.responses, limit=pair.now + 100)
        ours = pair.responses[handle]
        theirs = exchange["response"]
        their_cf = next(
            (o["value"] for o in theirs["options"] if o["name"] == "Content-Format"), None
        )
        if _known(run, exchange):
            continue
        compared += 1
        if (code(ours), _content_format(ours)) != (theirs["code"], their_cf):
            differences.append(
                f"{exchange['id']} {exchange['description']}: captured {theirs['code']} "
                f"cf={their_cf}, simulator {code(ours)} cf={_content_format(ours)}"
            )
    assert compared > 40
    assert differences == []
