"""A small eIM world for the tests: a test PKI, an eIM identity, simulated eUICCs and IPAs."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.eim import Eim, EimDeployment, Exchange, Ledger
from sgp32.signing import EimIdentity
from simulators.esim.euicc import EimAssociation, SimEuicc, SimProfile
from simulators.esim.ipa import SimIpa
from tests.sgp32.pki import NOW, MadePki, eid_with_check, make_euicc

T0 = NOW.timestamp()
EIM_ID = "eim.fleetloop.test"
OLD_ICCID = "8988247000000000011"
NEW_ICCID = "8988247000000000029"
OLD_CARRIER, NEW_CARRIER = "Carrier A", "Carrier B"


def der(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined,no-any-return]


@dataclass
class World:
    pki: MadePki
    identity: EimIdentity
    eim: Eim
    euiccs: dict[str, SimEuicc] = field(default_factory=dict)

    def device(
        self, n: int, served: set[str] | None = None, rollback_after: float = 30.0
    ) -> tuple[SimEuicc, SimIpa]:
        """eUICC number n with an enabled profile at carrier A and a disabled one at B."""
        eid = eid_with_check(f"890490320000000000000000{n:06d}")
        key, cert = make_euicc(self.pki, eid)
        euicc = SimEuicc(
            eid=eid,
            key=key,
            certificate_der=der(cert),
            eum_certificate_der=der(self.pki.eum),
            profiles={
                OLD_ICCID: SimProfile(OLD_ICCID, OLD_CARRIER, enabled=True, fallback=True),
                NEW_ICCID: SimProfile(NEW_ICCID, NEW_CARRIER),
            },
            eims={EIM_ID: EimAssociation(EIM_ID, self.identity.public_key)},
        )
        self.euiccs[eid] = euicc
        carriers = {OLD_CARRIER, NEW_CARRIER} if served is None else served
        return euicc, SimIpa(euicc, carriers, rollback_after=rollback_after)

    def register(self, ledger: Ledger, euicc: SimEuicc, now: float = T0) -> None:
        self.eim.register_euicc(
            ledger,
            euicc_certificate=euicc.certificate_der,
            eum_certificate=euicc.eum_certificate_der,
            now=now,
            actor="alice",
        )


def make_world(pki: MadePki) -> World:
    identity = EimIdentity(EIM_ID, ec.generate_private_key(ec.SECP256R1()))
    counter = iter(range(1, 10**9))
    eim = Eim(
        EimDeployment.of([identity], [pki.ci]),
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
    )
    return World(pki, identity, eim)


def step(world: World, ledger: Ledger, ipa: SimIpa, now: float) -> Exchange | None:
    """One IPA -> eIM -> IPA round trip in memory (None: the IPA has no connectivity)."""
    sent = ipa.outgoing(now)
    if sent is None:
        return None
    exchange = world.eim.handle(ledger, sent, now)
    ipa.incoming(sent, exchange.reply, now)
    return exchange


def run_until_idle(
    world: World, ledger: Ledger, ipa: SimIpa, now: float, limit: int = 20
) -> list[Exchange]:
    """Round trips until the IPA polls and hears "no package"."""
    done: list[Exchange] = []
    ipa.last_get_answer = None
    for _ in range(limit):
        exchange = step(world, ledger, ipa, now)
        if exchange is None:
            return done
        done.append(exchange)
        if (
            ipa.last_get_answer == "eimPackageError:1"
            and not ipa.pending
            and not ipa.euicc.notifications
        ):
            return done
    raise AssertionError("the IPA and the eIM did not settle")
