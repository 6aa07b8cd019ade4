"""Pure pieces of the transport layer: peers, identities, record splitting, pre-filters,
credential adapters, configuration checks."""

from __future__ import annotations

import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from lwm2m.transport import (
    CertificateIdentity,
    ConfigurationError,
    DtlsClientConfig,
    DtlsServerConfig,
    MappingPskStore,
    Peer,
    PskIdentity,
    X509Credentials,
)
from lwm2m.transport._common import (
    RateLimitedLog,
    cookie_param,
    is_client_hello,
    split_records,
)
from lwm2m.transport._engine import record_overhead
from lwm2m.transport.credentials import PskLookup
from tests.transport.helpers import Pki


def test_peers_with_equal_fields_are_equal_and_hash_alike_and_identity_matters() -> None:
    a = Peer(("10.0.0.1", 5684), PskIdentity(b"dev"), True)
    b = Peer(("10.0.0.1", 5684), PskIdentity(b"dev"), True)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Peer(("10.0.0.1", 5684), PskIdentity(b"other"), True)
    assert a != Peer(("10.0.0.1", 5684))
    assert str(a) == "10.0.0.1:5684 (psk:dev)"
    assert str(Peer(("::1", 5683, 0, 0))) == "[::1]:5683"
    with pytest.raises(AttributeError):
        a.secure = False  # type: ignore[misc]


def test_certificate_identity_reads_cn_san_and_fingerprint() -> None:
    pki = Pki.create()
    pem, _ = pki.issue("urn:imei:1", dns=("a.example",), uris=("urn:imei:1",))
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    identity = CertificateIdentity.from_der(der)
    assert identity.common_name == "urn:imei:1"
    assert identity.dns_names == ("a.example",)
    assert identity.uris == ("urn:imei:1",)
    assert identity.subject == "CN=urn:imei:1"
    assert str(identity) == "x509:urn:imei:1"
    assert hash(identity) == hash(CertificateIdentity.from_der(der))


def _record(content_type: int, epoch: int, body: bytes) -> bytes:
    return (
        bytes([content_type, 0xFE, 0xFD])
        + epoch.to_bytes(2, "big")
        + bytes(6)
        + len(body).to_bytes(2, "big")
        + body
    )


@given(st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=12))
def test_split_records_keeps_records_whole_and_datagrams_within_the_mtu(sizes: list[int]) -> None:
    records = [_record(22, 0, bytes([i % 256]) * n) for i, n in enumerate(sizes)]
    datagrams = split_records(b"".join(records), 500)
    assert b"".join(datagrams) == b"".join(records)
    rebuilt = []
    for datagram in datagrams:
        pos = count = 0
        while pos < len(datagram):
            end = pos + 13 + int.from_bytes(datagram[pos + 11 : pos + 13], "big")
            rebuilt.append(datagram[pos:end])
            pos, count = end, count + 1
        assert pos == len(datagram)
        assert len(datagram) <= 500 or count == 1  # only a record larger than the MTU exceeds it
    assert rebuilt == records


def test_only_epoch_zero_client_hellos_pass_the_pre_filter() -> None:
    hello = _record(22, 0, b"\x01" + bytes(40))
    assert is_client_hello(hello)
    assert not is_client_hello(_record(22, 1, b"\x01" + bytes(40)))  # encrypted epoch
    assert not is_client_hello(_record(22, 0, b"\x10" + bytes(40)))  # client key exchange
    assert not is_client_hello(_record(23, 0, b"\x01" + bytes(40)))  # application data
    assert not is_client_hello(b"\x16\xfe\xfd")


def test_cookie_parameter_binds_address_and_port() -> None:
    assert cookie_param(("192.0.2.1", 5684)) == bytes([192, 0, 2, 1, 0x16, 0x34])
    v6 = cookie_param(("2001:db8::1", 5684, 0, 0))
    assert len(v6) == 18 and v6.endswith(b"\x16\x34")
    assert cookie_param(("192.0.2.1", 5684)) != cookie_param(("192.0.2.1", 5685))


def test_record_overhead_per_suite() -> None:
    assert record_overhead("TLS-PSK-WITH-AES-128-CCM-8") == 29
    assert record_overhead("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256") == 37
    assert record_overhead("TLS-PSK-WITH-AES-128-CBC-SHA256") == 77


def test_psk_lookup_adapts_a_store_and_remembers_the_identity() -> None:
    lookup = PskLookup(MappingPskStore({b"dev": b"key"}))
    assert lookup["dev"] == b"key" and lookup.found == b"dev"
    with pytest.raises(KeyError):
        lookup["nobody"]
    assert lookup.missing == b"nobody"
    assert bool(lookup) and len(lookup) == 0 and list(lookup) == []

    class Broken:
        def lookup(self, identity: bytes) -> bytes | None:
            raise OSError("db down")

    broken = PskLookup(Broken())
    with pytest.raises(KeyError):
        broken["dev"]
    assert broken.errors == 1


def test_configurations_refuse_what_cannot_work() -> None:
    with pytest.raises(ConfigurationError):
        DtlsServerConfig()
    with pytest.raises(ConfigurationError):
        DtlsServerConfig(psk_store=MappingPskStore({}), max_sessions=0)
    with pytest.raises(ConfigurationError):
        DtlsServerConfig(
            psk_store=MappingPskStore({}), handshake_timeout_min=2, handshake_timeout_max=1
        )
    with pytest.raises(ConfigurationError):
        DtlsServerConfig(psk_store={b"a": b"b"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        DtlsClientConfig()
    with pytest.raises(ConfigurationError):
        DtlsClientConfig(psk=(b"\xff\xfe", b"key"))  # python-mbedtls needs UTF-8 identities
    with pytest.raises(ConfigurationError):
        X509Credentials(chain=(), private_key=b"", trust_anchors=(b"x",))
    with pytest.raises(ConfigurationError):
        X509Credentials(chain=(b"junk",), private_key=b"junk", trust_anchors=(b"x",)).to_mbedtls()


def test_rate_limited_log_says_how_much_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), logging.WARNING, interval=60)
    with caplog.at_level(logging.WARNING, "test.ratelimit"):
        for _ in range(5):
            log("bad thing %d", 1)
    assert [r.getMessage() for r in caplog.records] == ["bad thing 1"]
    log._next = 0.0  # the interval passed
    with caplog.at_level(logging.WARNING, "test.ratelimit"):
        log("bad thing %d", 2)
    assert caplog.records[-1].getMessage() == "bad thing 2 (4 similar suppressed)"
