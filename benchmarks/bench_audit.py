"""Audit log costs on one store: append, checkpoint, verify, inclusion proof.

    .venv/bin/python -m benchmarks.bench_audit [--records 20000] [--database-url URL]

Appends N records in one transaction (each names one device), then signs a checkpoint over
all of them (recomputing every leaf from content), verifies the whole log against it and
builds one inclusion proof. Results go to docs/AUDIT.md ("Limits").
"""

from __future__ import annotations

import argparse
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lwm2m.store import Ed25519Signer, Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    store = Store.open(args.database_url, tempfile.mkdtemp(prefix="bench-audit-"))
    store.create_schema()
    signer = Ed25519Signer(Ed25519PrivateKey.generate())
    n = args.records
    start = time.perf_counter()
    with store.transaction() as tx:
        base = store.audit.size(tx)
        for i in range(n):
            store.audit.append(
                tx,
                actor="operator:bench",
                action="dm.write",
                subject=f"ep{i % 100}",
                now=float(i),
                endpoints=[f"ep{i % 100}"],
                detail={"path": "/3/0/14", "value": i},
                outcome="2.04",
            )
    appended = time.perf_counter()
    with store.transaction() as tx:
        store.audit.checkpoint(tx, signer, now=time.time())
    signed = time.perf_counter()
    verdict = store.read_sync(lambda tx: store.audit.verify(tx, verifier=signer.verifier()))
    verified = time.perf_counter()
    proof = store.read_sync(lambda tx: store.audit.inclusion_proof(tx, base + n // 2))
    proved = time.perf_counter()
    store.close()
    print(f"{store.dialect}: {n} records")
    print(f"  append      {n / (appended - start):8.0f} records/s (one transaction)")
    print(f"  checkpoint  {signed - appended:8.2f} s (first in this process: every leaf)")
    print(f"  verify      {verified - signed:8.2f} s (ok={verdict.ok})")
    print(f"  prove       {proved - verified:8.3f} s (path of {len(proof.path)} hashes)")


if __name__ == "__main__":
    main()
