"""Named server contexts (``--context``, ``fleetloop context ...``), like kubeconfig."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.harness import Background, background_service, invoke


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("data")) as background:
        background.add_device("ctx-1")
        yield background


def test_a_named_context_reaches_its_server_from_anywhere(
    served: Background, tmp_path: Path
) -> None:
    assert served.info is not None
    contexts = tmp_path / "contexts.json"
    elsewhere = tmp_path / "empty-data-dir"  # no api.json: only the context can find the server

    def cli(*args: str) -> tuple[int, str, str]:
        result = invoke(elsewhere, *args, env={"FLEETLOOP_CONTEXTS": str(contexts)})
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = cli(
        "context", "add", "lab", "--url", served.info.url, "--token", served.info.token
    )
    assert code == 0 and "(current)" in out
    assert stat.S_IMODE(contexts.stat().st_mode) == 0o600  # it holds tokens
    code, out, _ = cli("context", "add", "dead", "--url", "http://127.0.0.1:9", "--token", "x")
    assert code == 0
    code, out, err = cli("devices", "list", "--json")  # the current context: lab
    assert code == 0, err
    assert [d["endpoint"] for d in json.loads(out)] == ["ctx-1"]
    code, _, err = cli("--context", "dead", "devices", "list")
    assert code == 3 and "context dead" in err
    code, _, err = cli("--context", "nope", "devices", "list")
    assert code == 2 and "no context 'nope'" in err and "lab" in err
    code, out, _ = cli("context", "list")
    assert code == 0 and "* " in out and "lab" in out and served.info.token not in out
    assert cli("context", "use", "dead")[0] == 0
    assert cli("devices", "list")[0] == 3
    assert cli("context", "remove", "dead")[0] == 0
    code, _, err = cli("devices", "list")  # no current context left: the data directory
    assert code == 3 and "no running fleetloop server found" in err
