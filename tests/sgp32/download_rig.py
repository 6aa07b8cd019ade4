"""The set-up the kill -9 download tests share: a ``fleetloop serve`` with its eIM trusting the
test SM-DP+'s TLS CA, a loopback SM-DP+ (CERT.DPauth from the test CI), one device whose eUICC
lacks the profile to download and runs the ES10b download, and a SIGKILL-and-restart of the
server on the same data directory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from simulators.esim.download import Es10bDownload
from simulators.esim.euicc import SimEuicc
from simulators.esim.ipa import SimIpa
from simulators.esim.smdp import LoopbackSmdp, SmdpServer
from tests.sgp32.serve_world import NEW_ICCID, EsimFiles, EsimWorld, start_serve, stop_serve
from tests.sgp32.test_compact_download import smdp_certificate
from tests.store.conftest import StoreTarget


@dataclass
class DownloadRig:
    files: EsimFiles
    extra: list[str]
    env: dict[str, str]
    smdp: LoopbackSmdp
    euicc: SimEuicc
    ipa: SimIpa
    worlds: list[EsimWorld] = field(default_factory=list)

    @property
    def world(self) -> EsimWorld:
        """The server running now (the restarted one after :meth:`restart`)."""
        return self.worlds[-1]

    def smdp_server(self) -> SmdpServer:
        cert, key, _ = self.files.tls
        return SmdpServer(self.smdp, cert, key)

    async def restart(self) -> EsimWorld:
        """SIGKILL the server (nothing is flushed or closed) and start it again."""
        process = self.world.serve.process
        process.kill()
        process.wait()
        again = await asyncio.to_thread(start_serve, self.files, self.extra, self.env)
        self.worlds.append(again)
        return again

    def stop(self) -> None:
        stop_serve(self.world)


def download_rig(target: StoreTarget, directory: Path, family: str) -> DownloadRig:
    """Start the server (SQLite, or ``target``'s PostgreSQL) and make device 1 of ``family``."""
    files = EsimFiles.make(directory)
    _, _, ca = files.tls
    env = {"FLEETLOOP_EIM_SMDP_CA": str(ca)}
    extra = ["--database-url", target.url] if target.backend == "postgresql" else []
    world = start_serve(files, extra, env_extra=env)
    pki = files.pki
    smdp_key = ec.generate_private_key(ec.SECP256R1())
    smdp_cert = smdp_certificate(pki, smdp_key, now=pki.ci.not_valid_before_utc)
    euicc, ipa = world.device(family, 1)
    del euicc.profiles[NEW_ICCID]
    ipa.downloader = Es10bDownload(euicc, pki.ci.public_key())  # type: ignore[arg-type]
    smdp = LoopbackSmdp("", smdp_key, smdp_cert, pki.ci)
    return DownloadRig(files, extra, env, smdp, euicc, ipa, [world])
