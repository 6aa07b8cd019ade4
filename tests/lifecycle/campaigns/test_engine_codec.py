"""The engine's persisted spec encoding: a campaign reloads to exactly the spec it was created
from (resolved values, overlays, windows, optional fields), without resolving anything again."""

from __future__ import annotations

import pytest

from lifecycle.campaigns.codec import dumps_spec, loads_spec
from lifecycle.campaigns.model import (
    CampaignSpec,
    CanarySpec,
    Component,
    Deadlines,
    GateSpec,
    Membership,
    OnFailure,
    Pacing,
    RetrySpec,
    Scope,
    WaveSpec,
    Window,
)
from lifecycle.state.dimensions import Dimension

DIGEST = "ab" * 32

SPECS = [
    CampaignSpec("minimal", "", (Component(Dimension.FLAGS, {}),)),
    CampaignSpec(
        name="everything",
        selector="region=eu,label:pilot",
        components=(
            Component(
                Dimension.CONFIG,
                {"version": "v9", "digest": DIGEST, "bundle": "v9"},
                artifact="bundle:v9",
                size=1234,
                overlays={"region=ap": {"version": "v9-ap", "digest": DIGEST}},
            ),
            Component(Dimension.CONNECTIVITY, {"apns": ["a", "b"], "active": "a"}),
            Component(Dimension.FIRMWARE, {"version": "2.4.1", "uri": "coap://h/fw/1"}),
        ),
        tenant="acme",
        membership=Membership.DYNAMIC,
        canary=CanarySpec(per_stratum=3, max_devices=7, bake_s=1.5, approval=True),
        waves=(WaveSpec(count=10, bake_s=0.0), WaveSpec(percent=37.5)),
        pacing=Pacing(rate=2.5, growth_factor=2.0, per_carrier={"tmo": 3, "vzw": 1}),
        windows=(Window(frozenset({0, 6}), 22 * 60, 4 * 60),),
        deadlines=Deadlines(1.0, 2.0, 3.0, 4.0),
        retry=RetrySpec(5, 1.0, 9.0),
        gates=GateSpec(
            min_sample=1,
            max_failures=0,
            max_failure_pct=None,
            max_deregistration_excess_pct=5.0,
            cohort_by=(Scope.CARRIER,),
        ),
        on_failure=OnFailure.HALT,
        revert_scope=Scope.BATCH,
        description="ünïcode ✓",
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_persisted_spec_reloads_exactly(spec: CampaignSpec) -> None:
    text = dumps_spec(spec)
    again = loads_spec(text)
    assert again == spec
    assert dumps_spec(again) == text  # stable: the same text every time
