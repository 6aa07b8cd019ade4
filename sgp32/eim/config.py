"""The eIM identities of one deployment and the CIs eUICC chains must lead to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from sgp32.errors import UnknownEim
from sgp32.signing import EimIdentity


@dataclass(frozen=True)
class EimDeployment:
    """Several eIMs may run in one deployment (eCO addEim/updateEim name the one they mean);
    each eUICC is associated with one of them. `trusted_cis`: the GSMA CI in production, the
    SGP.26 test CI or a CI the tests make otherwise."""

    identities: Mapping[str, EimIdentity]
    trusted_cis: tuple[x509.Certificate, ...]
    default_eim_id: str = field(default="")

    @classmethod
    def of(
        cls, identities: Sequence[EimIdentity], trusted_cis: Sequence[x509.Certificate]
    ) -> EimDeployment:
        if not identities:
            raise UnknownEim("configure at least one eIM identity (eimId and signing key)")
        by_id = {i.eim_id: i for i in identities}
        if len(by_id) != len(identities):
            raise UnknownEim("two eIM identities share one eimId; each needs its own")
        return cls(by_id, tuple(trusted_cis), identities[0].eim_id)

    def identity(self, eim_id: str | None = None) -> EimIdentity:
        wanted = eim_id or self.default_eim_id
        try:
            return self.identities[wanted]
        except KeyError:
            known = ", ".join(sorted(self.identities))
            raise UnknownEim(f"eIM {wanted!r} is not configured (configured: {known})") from None
