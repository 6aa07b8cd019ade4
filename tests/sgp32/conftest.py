"""Fixtures for the eIM codec and signature tests: the reference vectors and a test PKI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asn1tools
import pytest

from tests.sgp32.pki import MadePki, make_pki


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "sgp32-vectors"


@pytest.fixture(scope="session")
def vector_index(vectors_dir: Path) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(
        (vectors_dir / "vectors" / "index.json").read_text()
    )["vectors"]
    return vectors


@pytest.fixture(scope="session")
def vector_certs(vectors_dir: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in (vectors_dir / "certs").glob("*.der")}


@pytest.fixture(scope="session")
def reference_spec(shared_dir: Path) -> Any:
    """The GSMA modules compiled with asn1tools, with the README's three tool workarounds:
    UICCCapability inlined, the OPENTYPE class replaced by OID/ANY, and `[n] IMPLICIT` on the
    references to tagged CHOICEs that asn1tools would otherwise tag twice."""
    folder = shared_dir / "reference" / "sgp32-asn1"
    pe = (folder / "PEDefinitions.asn").read_text()
    uicc = re.search(r"UICCCapability ::= BIT STRING \{.*?\n\}", pe, re.S)
    assert uicc is not None
    rsp = (folder / "RSPDefinitions.asn").read_text()
    rsp = re.sub(r"\nUICCCapability FROM PEDefinitions \{[^}]*\};", ";", rsp)
    rsp = re.sub(r"OPENTYPE ::= CLASS \{.*?\}", "", rsp, flags=re.S)
    rsp = rsp.replace("OPENTYPE.&typeId", "OBJECT IDENTIFIER").replace("OPENTYPE.&Type", "ANY")
    rsp = rsp.rstrip()[: -len("END")] + uicc.group(0) + "\nEND\n"
    sgp = (folder / "SGP32Definitions.asn").read_text()
    sgp = sgp.replace("VersionType, UICCCapability, ", "VersionType, ", 1)
    rsp_oid = (
        "{joint-iso-itu-t(2) international-organizations(23) gsma(146) rsp(1) asn1modules(1)"
        " sgp22v2(2)}"
    )
    sgp = sgp.replace("IMPORTS ", f"IMPORTS UICCCapability FROM RSPDefinitions {rsp_oid}\n", 1)
    tagged_choices = set(re.findall(r"^([\w-]+) ::= \[\d+\] CHOICE", rsp + sgp, re.M))

    def implicit(match: re.Match[str]) -> str:
        if match.group(2) in tagged_choices:
            return f"{match.group(1)} IMPLICIT {match.group(2)}"
        return match.group(0)

    rsp, sgp = (re.sub(r"(\[\d+\])\s+([\w-]+)", implicit, text) for text in (rsp, sgp))
    pkix = [(folder / n).read_text() for n in ("PKIX1Explicit88.asn", "PKIX1Implicit88.asn")]
    return asn1tools.compile_string("\n".join([*pkix, rsp, sgp]), "der")


@pytest.fixture(scope="session")
def pki() -> MadePki:
    return make_pki()


from tests.store.conftest import pg_admin, store, target  # noqa: E402, F401  (fixtures)
