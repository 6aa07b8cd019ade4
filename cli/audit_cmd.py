"""``fleetloop audit``: read, verify and prove the one audit log; keep checkpoints elsewhere.

``log``, ``verify``, ``prove`` and ``checkpoint`` talk to the server's API (``/audit...``);
``check-proof`` needs no server at all: it checks a proof file offline with the pure functions
of :mod:`lwm2m.store.checkpoint` (RFC 6962 path + Ed25519 signature), which is the point of a
proof. Keep the output of ``checkpoint --out`` somewhere the database's writers cannot reach;
``verify --checkpoint FILE`` then catches even an attacker who rewrote the checkpoint table.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import click

from cli.client import CliFailure
from cli.commands import api, json_option
from cli.output import print_json, table, widen

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_CHECKPOINT_FIELDS = ("tree_size", "root_hash", "signature", "key_id")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def since_value(text: str | None, now: float | None = None) -> str | None:
    """``1h`` / ``30m`` / ``2d`` (ago) as epoch seconds; ISO 8601 or epoch passed through."""
    if text is None:
        return None
    match = _RELATIVE.match(text)
    if match:
        ago = float(match.group(1)) * _UNITS[match.group(2)]
        return repr((time.time() if now is None else now) - ago)
    return text


def _read_json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CliFailure(f"cannot read {what} {path}: {err}") from None


def _write_json_file(path: str, doc: Any) -> None:
    try:
        Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise CliFailure(f"cannot write {path}: {err.strerror or err}") from None


@click.group()
def audit() -> None:
    """The one audit log: who changed what, on which devices; verify it, prove records."""


@audit.command("log")
@click.option("--endpoint", "endpoints", multiple=True, help="records about this device (repeat)")
@click.option("--select", "selector", help="records about the devices a selector names")
@click.option("--since", help="1h, 30m, 2d ago, or ISO 8601 / epoch seconds")
@click.option("--until", help="ISO 8601 or epoch seconds")
@click.option("--action", help="action prefix: dm., token., bootstrap., state., ...")
@click.option("--actor", help="e.g. operator:alice")
@click.option("--after", type=click.IntRange(min=0), help="records after this seq (paging)")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
def log_cmd(
    endpoints: tuple[str, ...],
    selector: str | None,
    since: str | None,
    until: str | None,
    action: str | None,
    actor: str | None,
    after: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """Audit records in log order (filtered)."""
    params: dict[str, Any] = {
        "since": since_value(since),
        "until": since_value(until),
        "action": action,
        "actor": actor,
        "after": after,
        "limit": limit,
        "endpoint": list(endpoints) or None,
        "select": selector,
    }
    with api() as client:
        result = client.request("GET", "/audit", params=params)
    if as_json:
        print_json(result)
        return
    rows = [
        (
            r["seq"],
            r["at"],
            r["actor"],
            r["action"],
            r["subject"],
            ",".join(r["endpoints"]),
            r["outcome"],
        )
        for r in result["items"]
    ]
    headers, rows = widen(
        ("SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DEVICES", "OUTCOME"),
        rows,
        result["items"],
        (
            ("TENANT", lambda r: r.get("tenant")),
            ("TOKEN", lambda r: r.get("token_id")),
            ("DETAIL", lambda r: json.dumps(r.get("detail"), ensure_ascii=False, sort_keys=True)),
        ),
    )
    click.echo(table(headers, rows))
    if result.get("next_after") is not None:
        click.echo(f"(more: --after {result['next_after']})")


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(dir_okay=False),
    help="a checkpoint kept elsewhere (from `audit checkpoint --out`) to verify against too",
)
@json_option
def verify_cmd(checkpoint_file: str | None, as_json: bool) -> None:
    """Recompute every record's hash and the Merkle roots of the checkpoints; exit 1 when the
    log was edited, records deleted, reordered or truncated."""
    params: dict[str, Any] = {}
    if checkpoint_file is not None:
        from lwm2m.store.checkpoint import Checkpoint, ProofError  # heavy: only when asked

        doc = _read_json_file(checkpoint_file, "checkpoint")
        try:
            kept = Checkpoint.from_dict(
                doc.get("checkpoint", doc) if isinstance(doc, dict) else doc
            )
        except ProofError as err:
            raise CliFailure(f"{checkpoint_file}: {err}") from None
        params = {
            "tree_size": kept.tree_size,
            "root_hash": kept.root_hash,
            "signature": kept.signature,
            "key_id": kept.key_id,
        }
    with api() as client:
        verdict = client.request("GET", "/audit/verify", params=params)
    if as_json:
        print_json(verdict)
    if verdict["ok"]:
        if not as_json:
            click.echo(
                f"audit log intact: {verdict['records']} records, {verdict['checkpoints']} "
                f"checkpoints verified, root {verdict['root_hash']}"
            )
        return
    raise CliFailure(f"audit log verification failed ({verdict['problem']}): {verdict['reason']}")


@audit.command("prove")
@click.argument("seq", type=click.IntRange(min=1))
@click.option("--tree-size", type=click.IntRange(min=1), help="prove against this checkpoint")
@click.option("--out", type=click.Path(dir_okay=False), help="write the proof JSON here")
def prove_cmd(seq: int, tree_size: int | None, out: str | None) -> None:
    """A self-contained inclusion proof of record SEQ (record, audit path, signed checkpoint,
    public key), checkable offline with `fleetloop audit check-proof`."""
    with api() as client:
        proof = client.request(
            "GET", f"/audit/records/{seq}/proof", params={"tree_size": tree_size}
        )
    if out is None:
        print_json(proof)
        return
    _write_json_file(out, proof)
    click.echo(
        f"proof of record {seq} in the tree of {proof['tree_size']} records written to {out} "
        f"(key {proof['key_id']})"
    )


@audit.command("check-proof")
@click.argument("proof_file", type=click.Path(dir_okay=False))
@click.option("--key-id", help="the signing key id you trust (from a kept checkpoint)")
@json_option
def check_proof_cmd(proof_file: str, key_id: str | None, as_json: bool) -> None:
    """Verify a proof file OFFLINE (no server): the record hashes to the leaf, the audit path
    leads to the checkpoint's root, and the checkpoint's signature holds."""
    from lwm2m.store.checkpoint import ProofError, check_proof_document  # heavy: offline only

    doc = _read_json_file(proof_file, "proof")
    if not isinstance(doc, dict):
        raise CliFailure(f"{proof_file}: not a proof document")
    try:
        summary = check_proof_document(doc, trusted_key_id=key_id)
    except ProofError as err:
        raise CliFailure(f"{proof_file}: proof does NOT verify: {err}") from None
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"proof verifies: record {summary['seq']} is in the audit log of "
        f"{summary['tree_size']} records, root {summary['root_hash']}, signed by key "
        f"{summary['key_id']}"
    )


@audit.command("checkpoint")
@click.option("--new", "make_new", is_flag=True, help="sign a checkpoint now first (admin)")
@click.option("--out", type=click.Path(dir_okay=False), help="write it here (keep it elsewhere)")
@json_option
def checkpoint_cmd(make_new: bool, out: str | None, as_json: bool) -> None:
    """Export the latest signed checkpoint (with the public key) for keeping elsewhere."""
    with api() as client:
        if make_new:
            client.request("POST", "/audit/checkpoints")
        listing = client.request("GET", "/audit/checkpoints", params={"limit": 1})
    if not listing["items"]:
        raise CliFailure(
            "no checkpoint yet: the log is empty or the server has not signed one; "
            "run `fleetloop audit checkpoint --new`"
        )
    latest = listing["items"][-1]
    doc = {
        "checkpoint": {
            **{k: latest[k] for k in _CHECKPOINT_FIELDS},
            "at": latest["at_epoch"],
            "at_iso": latest["at"],
        },
        "public_key": listing["public_key"],
        "key_id": listing["key_id"],
    }
    if out is not None:
        _write_json_file(out, doc)
        if not as_json:
            click.echo(f"checkpoint of {latest['tree_size']} records written to {out}")
            return
    if as_json or out is None:
        print_json(doc)


__all__ = ["audit", "since_value"]
