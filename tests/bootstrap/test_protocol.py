"""Sans-IO bootstrap pieces: request parsing (fuzzed), authorisation, and the session state
machine's retries and failure paths, all without sockets."""

from __future__ import annotations

import contextlib

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap.errors import BadBootstrapRequest, NotProvisionable
from bootstrap.identities import BootstrapCredential, FactoryIdentity, IdentityStatus
from bootstrap.plan import DmCredentials, ProvisioningPlan, PskSecret, build_plan
from bootstrap.policy import FormatPreference, Policy
from bootstrap.protocol import (
    BootstrapRequest,
    DeviceInfo,
    PackRequest,
    choose_format,
    parse_bootstrap_request,
)
from bootstrap.server import Channel, authorize
from bootstrap.session import BootstrapSession, Commit, Request, SessionState, StepKind
from lwm2m.codec import ContentFormat

KEY = bytes(range(16))

# -- parsing --------------------------------------------------------------------------------------


def test_bootstrap_and_pack_requests_parse() -> None:
    parsed = parse_bootstrap_request("POST", ["bs"], ["ep=dev-1", "pct=112"])
    assert parsed == BootstrapRequest("dev-1", 112)
    assert parse_bootstrap_request("POST", ["bs"], ["ep=dev-1"]) == BootstrapRequest("dev-1")
    assert parse_bootstrap_request("POST", ["bs"], ["pct=1542", "ep=d"]) == BootstrapRequest(
        "d", ContentFormat.TLV
    )
    assert parse_bootstrap_request("GET", ["bspack"], ["ep=dev-1"], 112) == PackRequest(
        "dev-1", 112
    )


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", ["bs"], ["ep=x"]),
        ("POST", ["rd"], ["ep=x"]),
        ("POST", [], []),
        ("PUT", ["bspack"], []),
    ],
)
def test_other_requests_are_not_bootstrap_requests(
    method: str, path: list[str], query: list[str]
) -> None:
    assert parse_bootstrap_request(method, path, query) is None


@pytest.mark.parametrize(
    "query",
    [[], ["ep="], ["ep=a b"], ["ep=x", "ep=y"], ["ep=x", "pct=abc"], ["ep=x", "pct=9999999"]],
)
def test_malformed_bootstrap_requests_are_4_00(query: list[str]) -> None:
    with pytest.raises(BadBootstrapRequest) as info:
        parse_bootstrap_request("POST", ["bs"], query)
    assert info.value.coap_code == "4.00"


@settings(max_examples=500)
@given(
    st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    st.lists(st.sampled_from(["bs", "bspack", "rd", "", "x"]) | st.text(max_size=8), max_size=3),
    st.lists(st.text(max_size=30), max_size=5),
    st.none() | st.integers(0, 65535),
)
def test_fuzzed_requests_parse_or_are_refused_cleanly(
    method: str, path: list[str], query: list[str], accept: int | None
) -> None:
    try:
        parsed = parse_bootstrap_request(method, path, query, accept)
    except BadBootstrapRequest:
        return
    if parsed is not None:
        assert parsed.endpoint and " " not in parsed.endpoint


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_fuzzed_datagrams_never_crash_the_parser(data: bytes) -> None:
    try:
        message = Message.decode(data)
    except Exception:
        return  # the CoAP core drops undecodable datagrams before us
    method = {Code.POST: "POST", Code.GET: "GET"}.get(message.code, "OTHER")
    with contextlib.suppress(BadBootstrapRequest):
        parse_bootstrap_request(method, message.opt.uri_path, message.opt.uri_query)


def test_format_preference_overrides_pct_and_version() -> None:
    assert choose_format(FormatPreference.TLV, 112, "1.2") == ContentFormat.TLV
    assert choose_format(FormatPreference.AUTO, None, "1.1") == ContentFormat.SENML_CBOR
    assert (
        choose_format(FormatPreference.AUTO, 0, "1.1") == ContentFormat.SENML_CBOR
    )  # not a write format


# -- authorisation --------------------------------------------------------------------------------

PSK_ID = FactoryIdentity("dev-1", BootstrapCredential.psk("dev-1-psk", KEY))
NOSEC_ID = FactoryIdentity("lab-1", BootstrapCredential.nosec())
CERT_ID = FactoryIdentity("cert-1", BootstrapCredential.x509("ab" * 32))


@pytest.mark.parametrize(
    ("identity", "channel", "revoked", "reason"),
    [
        (None, Channel(NOSEC_ID.security_mode), False, "unknown endpoint"),
        (PSK_ID, Channel(PSK_ID.security_mode, psk_identity=b"dev-1-psk"), False, None),
        (PSK_ID, Channel(PSK_ID.security_mode, psk_identity=b"dev-2-psk"), False, "another"),
        (PSK_ID, Channel(NOSEC_ID.security_mode), False, "NoSec bootstrap refused"),
        (NOSEC_ID, Channel(NOSEC_ID.security_mode), False, None),
        (NOSEC_ID, Channel(PSK_ID.security_mode, psk_identity=b"lab-1"), False, "imported as"),
        (CERT_ID, Channel(CERT_ID.security_mode, fingerprint="ab" * 32), False, None),
        (CERT_ID, Channel(CERT_ID.security_mode, fingerprint="cd" * 32), False, "not this"),
        (CERT_ID, Channel(CERT_ID.security_mode, fingerprint="ab" * 32), True, "revoked"),
    ],
)
def test_only_the_identitys_own_channel_may_bootstrap(
    identity: FactoryIdentity | None, channel: Channel, revoked: bool, reason: str | None
) -> None:
    endpoint = identity.endpoint if identity is not None else "ghost"
    verdict = authorize(endpoint, identity, channel, certificate_revoked=revoked)
    if reason is None:
        assert verdict is None
    else:
        assert verdict is not None and reason in verdict


def test_a_revoked_identity_is_refused_whatever_the_channel() -> None:
    revoked = FactoryIdentity("lab-1", BootstrapCredential.nosec(), status=IdentityStatus.REVOKED)
    assert authorize("lab-1", revoked, Channel(revoked.security_mode)) == "identity revoked"


# -- the session state machine --------------------------------------------------------------------

POLICY = Policy.from_document(
    {
        "name": "p",
        "servers": [{"uri": "coaps://dm:5684"}],
        "apn_profiles": [{"name": "iot", "apn": "iot.example"}],
    }
)
IDENTITY = FactoryIdentity("dev-1", BootstrapCredential.psk("dev-1", KEY))
CREDS = DmCredentials(psk=PskSecret("dev-1", b"\x02" * 16))
DISCOVER = b"</>;lwm2m=1.1,</0/0>,</1>,</11>"


def planner(info: DeviceInfo | None, version: str) -> ProvisioningPlan:
    return build_plan(IDENTITY, POLICY, info, CREDS, lwm2m_version=version, secure_channel=True)


def session(retries: int = 2, pct: int | None = 112) -> BootstrapSession:
    return BootstrapSession(
        "dev-1",
        preferred_format=pct,
        content_format=lambda v: choose_format(FormatPreference.AUTO, pct, v),
        planner=planner,
        retries=retries,
    )


def code(text: str) -> int:
    major, minor = text.split(".")
    return int(major) << 5 | int(minor)


def drive(s: BootstrapSession, answer: dict[str, str]) -> list[str]:
    """Answer every request by its description (default 2.xx); returns what was asked."""
    asked: list[str] = []
    defaults = {
        "discover": "2.05",
        "read": "2.05",
        "delete": "2.02",
        "write": "2.04",
        "finish": "2.04",
    }
    while (action := s.next_action()) is not None:
        if isinstance(action, Commit):
            asked.append("commit")
            s.on_committed()
            continue
        assert isinstance(action, Request)
        asked.append(action.describe())
        reply = answer.get(action.describe(), defaults[action.kind.value])
        if reply == "timeout":
            s.on_failure("timeout")
            continue
        payload = DISCOVER if action.kind is StepKind.DISCOVER else b""
        cf = ContentFormat.LINK if action.kind is StepKind.DISCOVER else None
        s.on_response(code(reply), cf, payload)
    return asked


def test_the_sequence_is_discover_read_delete_write_commit_finish() -> None:
    s = session()
    asked = drive(s, {})
    assert asked == [
        "discover /",
        "read /1",
        "delete /0",
        "delete /1",
        "delete /11",
        "write /0/1",
        "write /11/0",
        "write /1/0",
        "commit",
        "finish /bs",
    ]
    assert s.state is SessionState.FINISHED and s.committed


def test_a_1_0_device_gets_no_bootstrap_read_and_tlv() -> None:
    s = session(pct=None)
    asked = drive(s, {"discover /": "4.04"})
    assert "read /1" not in asked and s.content_format == ContentFormat.TLV
    assert s.state is SessionState.FINISHED


def test_timeouts_and_server_errors_are_retried_then_reported() -> None:
    s = session(retries=1)
    asked = drive(s, {"write /0/1": "5.03"})
    assert asked.count("write /0/1") == 2 and s.state is SessionState.FAILED
    assert "write /0/1 failed after 2 attempts: 5.03" in s.error
    assert not s.committed

    flaky = session(retries=2)
    answers = iter(["timeout", "timeout", "2.02"])
    while (action := flaky.next_action()) is not None:
        if isinstance(action, Commit):
            flaky.on_committed()
            continue
        if action.describe() == "delete /1":
            reply = next(answers)
            if reply == "timeout":
                flaky.on_failure("no answer")
            else:
                flaky.on_response(code(reply), None, b"")
            continue
        cf = ContentFormat.LINK if action.kind is StepKind.DISCOVER else None
        ok = {
            "discover": "2.05",
            "read": "2.05",
            "delete": "2.02",
            "write": "2.04",
            "finish": "2.04",
        }
        flaky.on_response(code(ok[action.kind.value]), cf, DISCOVER if cf else b"")
    assert flaky.state is SessionState.FINISHED


def test_a_refused_format_falls_back_to_tlv_once() -> None:
    s = session()
    asked: list[tuple[str, int | None]] = []
    while (action := s.next_action()) is not None:
        if isinstance(action, Commit):
            s.on_committed()
            continue
        asked.append((action.describe(), action.content_format))
        if action.kind is StepKind.WRITE and action.content_format == ContentFormat.SENML_CBOR:
            s.on_response(code("4.15"), None, b"")
            continue
        cf = ContentFormat.LINK if action.kind is StepKind.DISCOVER else None
        ok = {
            "discover": "2.05",
            "read": "2.05",
            "delete": "2.02",
            "write": "2.04",
            "finish": "2.04",
        }
        s.on_response(code(ok[action.kind.value]), cf, DISCOVER if cf else b"")
    assert s.state is SessionState.FINISHED
    writes = [a for a in asked if a[0].startswith("write")]
    assert writes[0] == ("write /0/1", ContentFormat.SENML_CBOR)
    assert all(cf == ContentFormat.TLV for _, cf in writes[1:])


def test_an_optional_object_the_device_lacks_is_skipped() -> None:
    s = session()
    drive(s, {"write /11/0": "4.04"})
    assert s.state is SessionState.FINISHED
    assert any("object absent; skipped" in str(r) for r in s.log)


def test_a_required_write_refused_fails_the_session_before_any_commit() -> None:
    s = session()
    drive(s, {"write /1/0": "4.00"})
    assert s.state is SessionState.FAILED and not s.committed
    assert "refused with 4.00" in s.error


def test_finish_refused_as_inconsistent_is_reported() -> None:
    s = session()
    drive(s, {"finish /bs": "4.06"})
    assert s.state is SessionState.FAILED and "inconsistent" in s.error and s.committed


def test_a_failed_commit_ends_the_session_without_finish() -> None:
    s = session()
    asked: list[str] = []
    while (action := s.next_action()) is not None:
        if isinstance(action, Commit):
            s.on_commit_failed("database down")
            continue
        asked.append(action.describe())
        cf = ContentFormat.LINK if action.kind is StepKind.DISCOVER else None
        ok = {
            "discover": "2.05",
            "read": "2.05",
            "delete": "2.02",
            "write": "2.04",
            "finish": "2.04",
        }
        s.on_response(code(ok[action.kind.value]), cf, DISCOVER if cf else b"")
    assert s.state is SessionState.FAILED and "finish /bs" not in asked
    assert "database down" in s.error


def test_a_plan_that_cannot_be_made_fails_after_discover() -> None:
    def refuse(info: DeviceInfo | None, version: str) -> ProvisioningPlan:
        raise NotProvisionable("no way")

    s = BootstrapSession(
        "dev-1", preferred_format=112, content_format=lambda v: 112, planner=refuse
    )
    drive(s, {})
    assert s.state is SessionState.FAILED and s.error == "no way"


def test_requests_are_fresh_messages_with_the_right_options() -> None:
    s = session()
    action = s.next_action()
    assert isinstance(action, Request)
    first, second = action.message(), action.message()
    assert first is not second and first.opt.accept == ContentFormat.LINK
    assert tuple(first.opt.uri_path) == ()
