"""``fleetloop campaign`` through click's CliRunner against ``fleetloop serve``'s composition
root with a small simulated fleet (:mod:`tests.lifecycle.api.campaign_world`), found through
the data directory as an operator's shell finds it.

Exit codes are the contract: 0 done, 1 the request failed (unknown campaign, a verb the state
does not allow), 2 a usage or spec mistake (naming the file or flag, the spec path and the
fix), 3 no server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

from tests.cli.harness import invoke
from tests.lifecycle.api.campaign_world import CampaignWorld, campaign_world, endpoints


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CampaignWorld]:
    with campaign_world(tmp_path_factory.mktemp("campaign-cli") / "data") as running:
        yield running


def cli(world: CampaignWorld, *args: str, code: int = 0) -> Result:
    result = invoke(world.data_dir, "campaign", *args)
    assert result.exit_code == code, (args, result.exit_code, result.output)
    return result


SPEC = """\
name: eu to v2
selector: region=eu
change:
  - config: cw-v2
canary: {per_stratum: 2, max_devices: 2, bake: 0, approval: true}
waves:
  - {percent: 100, bake: 0.3s}
gates: {min_sample: 2, min_ack_pct: null, cohort_by: [region]}
deadlines: {delivered: 15s, applied: 15s, verified: 15s}
"""


def test_plan_and_create_read_the_same_yaml_and_status_shows_waves_cohorts_and_gates(
    world: CampaignWorld, tmp_path: Path
) -> None:
    spec = tmp_path / "eu.yaml"
    spec.write_text(SPEC)
    planned = cli(world, "plan", "-f", str(spec)).output
    assert "plan 'eu to v2': 8 devices in 2 waves" in planned
    assert "canary" in planned and "eu      telco-a  T1   8" in planned
    assert "conflicts: none" in planned
    as_json = json.loads(cli(world, "plan", "-f", str(spec), "-o", "json").output)
    assert as_json["devices"] == 8 and as_json["spec"]["canary"]["approval"] is True

    created = cli(world, "create", "-f", str(spec)).output
    assert created.startswith("created campaign c-")
    cid = created.split()[2]
    world.until(cid, ("awaiting_approval",))
    shown = cli(world, "status", cid).output
    assert f"campaign {cid}  'eu to v2'  AWAITING_APPROVAL" in shown
    assert "[" in shown and "2/8 done" in shown
    assert "region=eu" in shown and "passed" in shown  # the canary's gate per cohort

    refused = cli(world, "pause", cid, code=1)
    assert "awaiting_approval" in refused.output
    assert "approved: now running" in cli(world, "approve", cid).output
    watched = cli(world, "status", cid, "--watch").output  # not a TTY: one line per status
    lines = watched.splitlines()
    assert lines[0].startswith(("running", "completed"))
    assert f"campaign {cid}  'eu to v2'  COMPLETED" in watched
    assert "8/8 done" in watched
    report = cli(world, "report", cid).output
    assert "changed 8 of 8 devices" in report and "succeeded 8" in report
    listed = cli(world, "list", "--state", "completed").output
    assert cid in listed and "bundle:cw-v2" in listed
    assert json.loads(cli(world, "status", cid, "--json").output)["state"] == "completed"


def test_the_flags_make_a_campaign_without_a_file_and_abort_needs_a_choice(
    world: CampaignWorld,
) -> None:
    created = cli(
        world, "create", "--name", "us v3", "--select", "region=us", "--config", "cw-v3",
        "--canary", "2", "--waves", "50%,100%", "--bake", "30s", "-o", "json",
    ).output  # fmt: skip
    found = json.loads(created)
    cid = found["id"]
    assert [w["name"] for w in found["waves"]] == ["canary", "wave 1", "wave 2"]
    assert [w["bake_s"] for w in found["waves"]] == [30.0, 30.0, 30.0]
    assert "--keep or --revert" in cli(world, "abort", cid, code=2).output
    assert "aborted (revert)" in cli(world, "abort", cid, "--revert").output
    world.until(cid, ("aborted",))
    again = cli(world, "resume", cid, code=1)
    assert "aborted" in again.output
    assert "no campaign 'c-nope'" in cli(world, "status", "c-nope", code=1).output


def test_spec_mistakes_exit_2_naming_the_file_or_flag_the_path_and_the_fix(
    world: CampaignWorld, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("{percent: 100, bake: 0.3s}", "{percent: 150}"))
    for verb in ("plan", "create"):
        out = cli(world, verb, "-f", str(bad), code=2).output
        assert (
            f"{bad}: waves[0].percent: 150 is not a percentage; give more than 0 up to 100" in out
        )
    out = cli(world, "plan", "--name", "x", "--select", "region=eu", "--config", "nope@1",
              code=2).output  # fmt: skip
    assert "--config/--firmware/--apn: change[0].config" in out
    out = cli(world, "plan", "--name", "x", "--select", "region=eu", "--config", "cw-v2",
              "--waves", "50%,10%", code=2).output  # fmt: skip
    assert "--waves" in out and "rising cumulative percentages" in out
    assert "give -f SPEC or --name" in cli(world, "plan", "--select", "a=b", code=2).output
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert "is not valid YAML/JSON at line" in cli(world, "plan", "-f", str(broken), code=2).output
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert "a campaign spec is a mapping" in cli(world, "plan", "-f", str(listed), code=2).output


def test_rollback_and_quarantine_from_the_command_line(
    world: CampaignWorld, tmp_path: Path
) -> None:
    spec = tmp_path / "ap.yaml"
    spec.write_text(SPEC.replace("region=eu", "region=ap").replace("cw-v2", "cw-v8"))
    cid = json.loads(cli(world, "create", "-f", str(spec), "-o", "json").output)["id"]
    world.until(cid, ("awaiting_approval",))
    first = endpoints("ap")[0]
    rolled = cli(world, "rollback", cid, "--select", f"endpoint={first}").output
    assert (
        f"rolling back 1 devices of campaign {cid} (endpoint={first})" in rolled
        or f"rolling back 0 devices of campaign {cid}" in rolled
    )  # not in the canary: skipped
    report = json.loads(cli(world, "report", cid, "-o", "json").output)
    mine = next(d for d in report["device_list"] if d["endpoint"] == first)
    assert mine["state"] in ("reverting", "reverted", "skipped")
    halted = cli(world, "quarantine", "bundle:cw-v8", "--reason", "test").output
    assert f"quarantined bundle:cw-v8: campaigns halted: {cid}" in halted
    assert "HALTED" in cli(world, "status", cid).output
    refused = cli(world, "plan", "--name", "x", "--select", "region=eu", "--config", "cw-v8",
                  code=1).output  # fmt: skip
    assert "quarantined" in refused
    world.end(cid)


def test_no_server_exits_3(tmp_path: Path) -> None:
    result = invoke(tmp_path / "empty", "campaign", "list")
    assert result.exit_code == 3, result.output
