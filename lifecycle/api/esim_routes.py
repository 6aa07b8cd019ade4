"""The eIM over HTTP: ``/v1/esim/...`` (docs/ESIM.md, docs/API.md "eSIM").

* ``POST /v1/esim/euiccs`` imports eUICCs -- each its certificate and its EUM's, verified up
  to the CI ``fleetloop serve --eim-ci`` trusts, optionally linked to the LwM2M device that
  carries it -- into the running eIM, all or nothing in one transaction.
* ``GET /v1/esim/euiccs[/{euicc}]``: eUICCs with their profiles, queue and last results.
* ``POST /v1/esim/euiccs/{euicc}/packages`` signs and queues a PSMO or eCO (the IPA fetches it
  on its next poll); ``GET .../packages`` and ``GET .../results`` show what came back.
* ``POST /v1/esim/packages`` queues the same PSMO/eCO for every eUICC of a selection (EIDs,
  endpoints, an inventory selector, the eUICCs bound to one eIM) in one transaction.
* ``GET /v1/esim/eims``: the eIM identities of this deployment (eimId, public key,
  certificate) and how many eUICCs each is bound to.
* ``POST /v1/esim/euiccs/{euicc}/eim`` moves an eUICC's binding to another eIM identity of
  this deployment once the eUICC confirmed an addEim of it (docs/SGP32.md, "Moving an eUICC
  to another eIM"); ``POST /v1/esim/moves`` moves every eUICC of a selection.

``{euicc}`` is an EID (32 digits) or the endpoint of the device the eUICC is linked to. An eUICC
outside the caller's tenants answers exactly what an unknown one answers. Roles: GET viewer,
POST operator (auth.py).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Query, Request

from lifecycle.api.auth import context_of
from lifecycle.api.errors import ApiError
from lifecycle.api.esim_models import (
    EimConfigBody,
    EimIdentityList,
    EimMoveBody,
    EimMoveResult,
    EimMoveSelectionBody,
    EimMoveSelectionResult,
    EuiccDetail,
    EuiccImportBody,
    EuiccImportResult,
    EuiccList,
    EuiccSelection,
    PackageBody,
    PackageList,
    PackageOut,
    ResultList,
    SelectionPackageBody,
    SelectionPackageResult,
)
from lifecycle.api.render import JsonObject, timestamp_fields
from lifecycle.api.scope import Scope, Scoped
from lifecycle.api.selection import selected
from lifecycle.esim import EsimComponent, FallbackError, check_fallback
from lwm2m.store import Tx
from sgp32.eim import EimDeployment, EuiccRecord, PackageRecord, ProfileRecord, ResultRecord
from sgp32.eim.associations import EimDeleteRefused, EimMoveRefused
from sgp32.eim.ledger import OPEN_STATES
from sgp32.eim.model import AssociationRecord
from sgp32.eim.sessions import SqlSessions
from sgp32.eim.sql import EimStore, ImportRefused, SqlLedger
from sgp32.errors import EimError, EuiccConflict, Sgp32Error, UnknownEim, UnknownEuicc
from sgp32.packages import (
    AddEim,
    Delete,
    DeleteEim,
    Disable,
    Eco,
    EimConfiguration,
    Enable,
    ListEim,
    ListProfileInfo,
    Psmo,
    SetFallbackAttribute,
    UnsetFallbackAttribute,
    UpdateEim,
)

router = APIRouter()
TAGS = [
    {
        "name": "esim",
        "description": "The eIM (SGP.32): eUICCs, their profiles, signed PSMO/eCO packages "
        "and the eUICCs' results (docs/ESIM.md).",
    }
]
RECENT = 20


def _esim(request: Request) -> EsimComponent:
    found = getattr(request.app.state, "esim", None)
    if not isinstance(found, EsimComponent):
        raise ApiError(
            503,
            "esim_disabled",
            "the eIM is not running on this server; start `fleetloop serve` with "
            "--esipa-https HOST:PORT and --eim-ci CI.pem (docs/ESIM.md)",
        )
    return found


def certificate_der(text: str, field: str) -> bytes:
    """A certificate given as PEM or base64 DER, as DER; 422 naming the field otherwise."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            cert = x509.load_pem_x509_certificate(stripped.encode())
            return cert.public_bytes(serialization.Encoding.DER)
        der = base64.b64decode("".join(stripped.split()), validate=True)
        x509.load_der_x509_certificate(der)
        return der
    except (ValueError, binascii.Error):
        raise ApiError(
            422,
            "invalid_input",
            f"{field}: not an X.509 certificate; give it as PEM or as base64 DER",
            field=field,
        ) from None


@contextmanager
def _errors(eid: str | None = None) -> Iterator[None]:
    try:
        yield
    except ImportRefused as err:
        status = 409 if isinstance(err.cause, EuiccConflict) else 422
        code = "conflict" if status == 409 else "invalid_input"
        raise ApiError(
            status,
            code,
            f"{err}; nothing of this import was written -- fix or drop that entry",
            field=f"euiccs[{err.index}]",
        ) from None
    except UnknownEuicc as err:
        raise ApiError(404, "not_found", str(err), eid=eid) from None
    except (EuiccConflict, EimMoveRefused, EimDeleteRefused) as err:
        raise ApiError(409, "conflict", str(err), eid=eid) from None
    except (EimError, Sgp32Error) as err:
        raise ApiError(422, "invalid_input", str(err), eid=eid) from None


# -- rendering ---------------------------------------------------------------------------------


def euicc_json(
    record: EuiccRecord, endpoint: str | None, enabled: str | None, queued: int
) -> JsonObject:
    return {
        "eid": record.eid,
        "endpoint": endpoint,
        "eim_id": record.eim_id,
        "counter_value": record.counter_value,
        "tenant": record.tenant,
        **timestamp_fields("registered_at", record.registered_at),
        "enabled_iccid": enabled,
        "queued": queued,
    }


def association_json(a: AssociationRecord, bound: str) -> JsonObject:
    return {
        "eim_id": a.eim_id,
        "bound": a.eim_id == bound,
        "counter_value": a.counter_value,
        "association_token": a.association_token,
        "source": a.source,
        "confirmed_at_epoch": a.confirmed_at,
        "deleted_at_epoch": a.deleted_at,
    }


def profile_json(p: ProfileRecord) -> JsonObject:
    return {
        "iccid": p.iccid,
        "state": p.state.value,
        "fallback": p.fallback,
        "carrier": p.carrier,
        "note": p.note,
        "updated_at_epoch": p.updated_at,
    }


def package_json(p: PackageRecord) -> JsonObject:
    result = None
    if p.result is not None:
        answers = p.result.get("results") or []
        result = {
            "kind": p.result.get("kind", ""),
            "results": answers,
            "error_code": p.result.get("error_code"),
            "rolled_back": any(a and a[0] == "rollbackResult" for a in answers),
            "reason": p.result.get("reason"),
            "message": p.result.get("message"),
        }
    return {
        "eid": p.eid,
        "eim_id": p.eim_id,
        "counter_value": p.counter_value,
        "transaction_id": p.transaction_id.hex(),
        "state": p.state.value,
        "operations": list(p.operations),
        "actor": p.actor,
        "created_at_epoch": p.created_at,
        "delivered_at_epoch": p.delivered_at,
        "result_at_epoch": p.result_at,
        "result": result,
    }


def result_json(r: ResultRecord) -> JsonObject:
    return {
        "received_at_epoch": r.received_at,
        "outcome": r.outcome,
        "transaction_id": r.transaction_id.hex() if r.transaction_id else None,
        "counter_value": r.counter_value,
        "detail": r.detail,
    }


def _eum_subject(record: EuiccRecord) -> str:
    try:
        return x509.load_der_x509_certificate(record.eum_certificate).subject.rfc4514_string()
    except ValueError:
        return ""


def _find(ledger: SqlLedger, ref: str) -> tuple[EuiccRecord, str | None] | None:
    """The eUICC an EID or a linked endpoint names, and its endpoint."""
    record = ledger.euicc(ref)
    eid = ref if record is not None else ledger.eid_of(ref)
    if record is None and eid is not None:
        record = ledger.euicc(eid)
    if record is None:
        return None
    return record, ledger.endpoints([record.eid]).get(record.eid)


def _unknown(ref: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"no eUICC {ref!r} (an EID or the endpoint of a device its eUICC is linked to); "
        "list them with GET /v1/esim/euiccs (`fleetloop esim list`), import with "
        "`fleetloop esim import`",
        euicc=ref,
    )


async def _resolve(component: EsimComponent, scope: Scope, ref: str) -> EuiccRecord:
    found = await component.eims.store.read(lambda tx: _find(component.eims.ledger(tx), ref))
    if found is None or not scope.principal.sees(found[0].tenant):
        raise _unknown(ref)
    return found[0]


def _pem_der(text: str, field: str, kind: str) -> bytes:
    """A PEM public key (SubjectPublicKeyInfo) or certificate as DER; 422 naming the field."""
    try:
        if kind == "certificate":
            cert = x509.load_pem_x509_certificate(text.strip().encode())
            return cert.public_bytes(serialization.Encoding.DER)
        key = serialization.load_pem_public_key(text.strip().encode())
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError):
        raise ApiError(
            422, "invalid_input", f"{field}: not a PEM {kind.replace('_', ' ')}", field=field
        ) from None


def eim_configuration(body: EimConfigBody, deployment: EimDeployment) -> EimConfiguration:
    """EimConfigurationData for addEim/updateEim. For an eIM of this deployment without a key
    or certificate in the body, its configured certificate (else its public key) is used."""
    public_key = certificate = None
    if body.public_key is not None:
        public_key = _pem_der(body.public_key, "eim.public_key", "public_key")
    if body.certificate is not None:
        certificate = _pem_der(body.certificate, "eim.certificate", "certificate")
    if public_key is not None and certificate is not None:
        raise ApiError(
            422, "invalid_input", "eim: give public_key or certificate, not both", field="eim"
        )
    local = deployment.identities.get(body.eim_id)
    if public_key is None and certificate is None and local is not None:
        if local.certificate is not None:
            certificate = local.certificate.public_bytes(serialization.Encoding.DER)
        else:
            public_key = local.public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
    return EimConfiguration(
        eim_id=body.eim_id,
        fqdn=body.fqdn,
        id_type=body.id_type,
        counter_value=body.counter_value,
        association_token=body.association_token,
        public_key_der=public_key,
        certificate_der=certificate,
        supported_protocols=tuple(body.supported_protocols),
        indirect_profile_download=body.indirect_profile_download,
    )


def operation_of(body: PackageBody, deployment: EimDeployment) -> Psmo | Eco:
    """The PSMO/eCO a body asks for; 422 naming the missing field."""
    needs_iccid = {"enable", "disable", "delete", "set-fallback"}
    if body.operation in needs_iccid and body.iccid is None:
        raise ApiError(
            422,
            "invalid_input",
            f"iccid: {body.operation} needs the profile's ICCID",
            field="iccid",
        )
    iccid = body.iccid or ""
    if body.operation == "enable":
        return Enable(iccid, rollback=body.rollback)
    if body.operation == "disable":
        return Disable(iccid)
    if body.operation == "delete":
        return Delete(iccid)
    if body.operation == "list-profiles":
        return ListProfileInfo(iccid=body.iccid)
    if body.operation == "set-fallback":
        return SetFallbackAttribute(iccid)
    if body.operation == "unset-fallback":
        return UnsetFallbackAttribute()
    if body.operation == "list-eim":
        return ListEim()
    if body.operation in ("add-eim", "update-eim"):
        if body.eim is None:
            raise ApiError(
                422,
                "invalid_input",
                f"eim: {body.operation} needs the eIM's configuration ({{eim_id, ...}})",
                field="eim",
            )
        config = eim_configuration(body.eim, deployment)
        keyless = config.public_key_der is None and config.certificate_der is None
        if body.operation == "add-eim" and keyless:
            raise ApiError(
                422,
                "invalid_input",
                f"eim: {body.eim.eim_id!r} is no eIM of this deployment; give its public_key "
                "or certificate",
                field="eim",
            )
        return AddEim(config) if body.operation == "add-eim" else UpdateEim(config)
    if body.operation == "download" or body.eim_id is None:
        raise ApiError(
            422, "invalid_input", "eim_id: delete-eim needs the eimId to remove", field="eim_id"
        )
    return DeleteEim(body.eim_id)


# -- routes ------------------------------------------------------------------------------------


@router.post(
    "/esim/euiccs",
    response_model=EuiccImportResult,
    tags=["esim"],
    summary="Import eUICCs (EID + certificate chain)",
    status_code=201,
)
async def import_euiccs(request: Request, scope: Scoped, body: EuiccImportBody) -> JsonObject:
    """Each chain must verify up to a CI the server trusts (``--eim-ci``) at the time of
    import; one refused entry refuses the whole batch (the answer names its index). Importing
    the same certificate again is a no-op that keeps the counter; a new ``endpoint`` relinks."""
    component = _esim(request)
    tenant = body.tenant
    principal = scope.principal
    if not principal.all_tenants:
        assert principal.tenants is not None
        if tenant is None and len(principal.tenants) == 1:
            tenant = next(iter(principal.tenants))
        if tenant is None or not principal.sees(tenant):
            raise ApiError(
                422,
                "invalid_input",
                "tenant: name one of your tenants for the imported eUICCs",
                field="tenant",
            )
    chains = [
        (
            certificate_der(item.euicc_certificate, f"euiccs[{i}].euicc_certificate"),
            certificate_der(item.eum_certificate, f"euiccs[{i}].eum_certificate"),
            item.eid,
            item.endpoint,
        )
        for i, item in enumerate(body.euiccs)
    ]
    with _errors():
        records = await component.eims.register_many(
            chains, now=time.time(), actor=principal.actor, tenant=tenant, eim_id=body.eim_id
        )
    links = {r.eid: item.endpoint for r, item in zip(records, body.euiccs, strict=True)}
    linked = [e for e, ep in links.items() if ep is not None]
    if linked:
        component.touch(linked)
    eims = component.eims

    def read(tx: Tx) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
        ledger = eims.ledger(tx)
        return ledger.endpoints(list(links)), ledger.enabled_profiles(), ledger.open_counts()

    endpoints, enabled, counts = await eims.store.read(read)
    return {
        "items": [
            euicc_json(r, endpoints.get(r.eid), enabled.get(r.eid), counts.get(r.eid, 0))
            for r in records
        ]
    }


@router.get(
    "/esim/euiccs",
    response_model=EuiccList,
    tags=["esim"],
    summary="List eUICCs",
)
async def list_euiccs(
    request: Request,
    scope: Scoped,
    limit: int = Query(100, ge=1, le=1000, description="at most this many, by EID"),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    eim_id: str | None = Query(None, description="only the eUICCs bound to this eIM identity"),
) -> JsonObject:
    """With the enabled profile the eIM knows of and the size of each queue; one page at a
    time (docs/API.md, Paging)."""
    eims = _esim(request).eims
    tenants = scope.principal.tenants

    def read(
        tx: Tx,
    ) -> tuple[list[EuiccRecord], dict[str, str], dict[str, str], dict[str, int]]:
        ledger = eims.ledger(tx)
        records = ledger.euiccs(after=cursor, limit=limit + 1, tenants=tenants, eim_id=eim_id)
        eids = [r.eid for r in records]
        return records, ledger.endpoints(eids), ledger.enabled_profiles(), ledger.open_counts()

    records, endpoints, enabled, counts = await eims.store.read(read)
    page = records[:limit]
    return {
        "items": [
            euicc_json(r, endpoints.get(r.eid), enabled.get(r.eid), counts.get(r.eid, 0))
            for r in page
        ],
        "next_cursor": page[-1].eid if len(records) > limit else None,
    }


@router.get(
    "/esim/euiccs/{euicc}",
    response_model=EuiccDetail,
    tags=["esim"],
    summary="Show an eUICC: profiles, queue, last results",
)
async def show_euicc(request: Request, scope: Scoped, euicc: str) -> JsonObject:
    component = _esim(request)
    record = await _resolve(component, scope, euicc)
    eims = component.eims

    def read(
        tx: Tx,
    ) -> tuple[
        str | None,
        list[ProfileRecord],
        list[PackageRecord],
        list[ResultRecord],
        list[AssociationRecord],
    ]:
        ledger = eims.ledger(tx)
        return (
            ledger.endpoints([record.eid]).get(record.eid),
            ledger.profiles(record.eid),
            ledger.packages(record.eid),
            ledger.results(record.eid),
            ledger.associations(record.eid),
        )

    endpoint, profiles, packages, results, associations = await eims.store.read(read)
    downloads = await SqlSessions(eims.store).of_eid(record.eid, RECENT)
    queue = [p for p in packages if p.state in OPEN_STATES]
    answered = [p for p in packages if p.state not in OPEN_STATES][::-1][:RECENT]
    enabled = next((p.iccid for p in profiles if p.state.value != "disabled"), None)
    return {
        **euicc_json(record, endpoint, enabled, len(queue)),
        "eum": _eum_subject(record),
        "associations": [association_json(a, record.eim_id) for a in associations],
        "profiles": [profile_json(p) for p in profiles],
        "queue": [package_json(p) for p in queue],
        "packages": [package_json(p) for p in answered],
        "results": [result_json(r) for r in results[::-1][:RECENT]],
        "downloads": [d.json() for d in downloads],
    }


@router.post(
    "/esim/euiccs/{euicc}/packages",
    response_model=PackageOut,
    tags=["esim"],
    summary="Queue a signed PSMO/eCO package",
    status_code=201,
)
async def queue_esim_package(
    request: Request, scope: Scoped, euicc: str, body: PackageBody
) -> JsonObject:
    """Signed with the eUICC's eIM key and the next counterValue (committed with the package,
    never reused); the IPA fetches it on its next poll. The answer is the queued package; its
    result shows in ``GET .../packages`` once the eUICC's signed result is in."""
    component = _esim(request)
    record = await _resolve(component, scope, euicc)
    eims = component.eims
    operation = _operation(body, eims.eim.deployment)
    now, actor = time.time(), scope.principal.actor
    with _errors(record.eid):
        try:
            package = await eims.store.write(
                lambda tx: _queue_for(
                    eims, eims.ledger(tx), record.eid, euicc, body, operation, now, actor
                )
            )
        except FallbackError as err:  # never the fallback profile (docs/ESIM.md)
            raise ApiError(409, "conflict", str(err), eid=record.eid) from None
    component.touch([record.eid])
    return package_json(package)


def _operation(body: PackageBody, deployment: EimDeployment) -> Psmo | Eco | None:
    """The signed PSMO/eCO a queue request asks for, or None for the unsigned requests
    (download, ipa-data); 422 naming the missing field (a download's activation code)."""
    if body.operation == "download" and body.activation_code is None:
        raise ApiError(
            422,
            "invalid_input",
            "activation_code: download needs the activation code (1$SM-DP+ address$ID)",
            field="activation_code",
        )
    if body.operation in ("download", "ipa-data"):
        return None
    return operation_of(body, deployment)


def _queue_for(
    eims: EimStore,
    ledger: SqlLedger,
    eid: str,
    name: str,
    body: PackageBody,
    operation: Psmo | Eco | None,
    now: float,
    actor: str,
) -> PackageRecord:
    """One eUICC's package of a queue request, in the caller's transaction: a download
    trigger, an IpaEuiccDataRequest or the signed `operation`. A disable/delete of its
    fallback profile raises `FallbackError` (naming it as `name`), checked in the same
    transaction as the queueing."""
    if body.operation == "ipa-data":
        return eims.eim.queue_ipa_data(ledger, eid, now=now, actor=actor)
    if operation is None:
        assert body.activation_code is not None
        return eims.eim.queue_download(ledger, eid, body.activation_code, now=now, actor=actor)
    if isinstance(operation, Disable | Delete):
        check_fallback(name, ledger.profiles(eid), [operation])
    return eims.eim.queue(ledger, eid, [operation], now=now, actor=actor)


@router.post(
    "/esim/euiccs/{euicc}/eim",
    response_model=EimMoveResult,
    tags=["esim"],
    summary="Move an eUICC to another eIM identity of this deployment",
)
async def move_euicc_eim(
    request: Request, scope: Scoped, euicc: str, body: EimMoveBody
) -> JsonObject:
    """From then on its packages are signed by that eIM, carry its eimId and its own counter,
    and results are verified with its associationToken. Only to an eIM the eUICC confirmed
    (its signed addEim result is in; 409 otherwise), configured here (422 otherwise), and
    while no package of the old eIM waits for a result (409). ``delete_old`` queues deleteEim
    of the old eIM, signed by the new one, in the same transaction."""
    component = _esim(request)
    record = await _resolve(component, scope, euicc)
    with _errors(record.eid):
        moved, package = await component.eims.move(
            record.eid,
            body.eim_id,
            now=time.time(),
            actor=scope.principal.actor,
            delete_old=body.delete_old,
        )
    component.touch([record.eid])
    eims = component.eims

    def read(tx: Tx) -> tuple[str | None, dict[str, str], dict[str, int]]:
        ledger = eims.ledger(tx)
        endpoint = ledger.endpoints([moved.eid]).get(moved.eid)
        return endpoint, ledger.enabled_profiles(), ledger.open_counts()

    endpoint, enabled, counts = await eims.store.read(read)
    return {
        "euicc": euicc_json(moved, endpoint, enabled.get(moved.eid), counts.get(moved.eid, 0)),
        "moved_from": record.eim_id,
        "delete_package": package_json(package) if package is not None else None,
    }


@router.get(
    "/esim/euiccs/{euicc}/packages",
    response_model=PackageList,
    tags=["esim"],
    summary="List an eUICC's packages and their results",
)
async def list_esim_packages(
    request: Request,
    scope: Scoped,
    euicc: str,
    limit: int = Query(100, ge=1, le=1000, description="the newest this many"),
) -> JsonObject:
    component = _esim(request)
    record = await _resolve(component, scope, euicc)
    eims = component.eims
    packages = await eims.store.read(lambda tx: eims.ledger(tx).packages(record.eid))
    return {"items": [package_json(p) for p in packages[::-1][:limit]]}


@router.get(
    "/esim/euiccs/{euicc}/results",
    response_model=ResultList,
    tags=["esim"],
    summary="List the results an eUICC's IPA delivered",
)
async def list_esim_results(
    request: Request,
    scope: Scoped,
    euicc: str,
    limit: int = Query(100, ge=1, le=1000, description="the newest this many"),
) -> JsonObject:
    """Every result, accepted or refused (signature, counter, replay: the reason is the
    outcome), newest first."""
    component = _esim(request)
    record = await _resolve(component, scope, euicc)
    eims = component.eims
    results = await eims.store.read(lambda tx: eims.ledger(tx).results(record.eid))
    return {"items": [result_json(r) for r in results[::-1][:limit]]}


async def _selection(
    request: Request, scope: Scope, eims: EimStore, body: EuiccSelection
) -> tuple[list[EuiccRecord], list[str]]:
    """The eUICCs a selection names (``eids``, ``endpoints``, ``select``, narrowed or -- alone
    -- given by ``bound_to``), by EID, and the selected endpoints without a linked eUICC.
    404 for an EID/endpoint in ``eids`` that names none; 422 when nothing is selected."""
    if not (body.eids or body.endpoints or body.select or body.bound_to):
        raise ApiError(
            422,
            "invalid_input",
            "name the eUICCs: eids, endpoints, select (an inventory selector) or bound_to",
            field="eids",
        )
    if body.bound_to is not None and body.bound_to not in eims.eim.deployment.identities:
        raise ApiError(
            422,
            "invalid_input",
            f"bound_to: {body.bound_to!r} is no eIM identity of this deployment "
            "(GET /v1/esim/eims)",
            field="bound_to",
        )
    chosen = await selected(context_of(request), scope, body.select)
    wanted_endpoints = set(body.endpoints or ()) | (chosen or set())
    principal = scope.principal

    def pick(tx: Tx) -> tuple[list[EuiccRecord], list[str], list[str]]:
        ledger = eims.ledger(tx)
        records: dict[str, EuiccRecord] = {}
        unknown: list[str] = []
        for ref in body.eids or ():
            found = _find(ledger, ref)
            if found is None or not principal.sees(found[0].tenant):
                unknown.append(ref)
            else:
                records[found[0].eid] = found[0]
        missing = []
        for endpoint in sorted(wanted_endpoints):
            eid = ledger.eid_of(endpoint)
            record = ledger.euicc(eid) if eid is not None else None
            if record is None or not principal.sees(record.tenant):
                missing.append(endpoint)
            else:
                records[record.eid] = record
        if body.bound_to is not None:
            if not (body.eids or body.endpoints or body.select):
                records = {
                    r.eid: r for r in ledger.euiccs(tenants=principal.tenants, eim_id=body.bound_to)
                }
            records = {e: r for e, r in records.items() if r.eim_id == body.bound_to}
        return sorted(records.values(), key=lambda r: r.eid), missing, unknown

    records, missing, unknown = await eims.store.read(pick)
    if unknown:
        raise _unknown(unknown[0])
    if not records:
        raise ApiError(
            422,
            "invalid_input",
            "the selection names no eUICC (devices without a linked eUICC: "
            f"{', '.join(missing[:10]) or 'none'})",
            field="eids",
        )
    return records, missing


@router.post(
    "/esim/packages",
    response_model=SelectionPackageResult,
    tags=["esim"],
    summary="Queue a PSMO/eCO for every eUICC of a selection",
    status_code=201,
)
async def queue_esim_selection(
    request: Request, scope: Scoped, body: SelectionPackageBody
) -> JsonObject:
    """The eUICCs: ``eids``, the eUICCs linked to ``endpoints`` or to the devices ``select``
    names, narrowed (or, alone, given) by ``bound_to`` (an eimId). Every package is signed
    with its eUICC's own eIM key and counter, all in one transaction: one refusal (an ICCID
    that does not parse, an unknown eimId) queues nothing. ``missing``: selected devices
    without a linked eUICC."""
    component = _esim(request)
    eims = component.eims
    operation = _operation(body, eims.eim.deployment)
    records, missing = await _selection(request, scope, eims, body)
    now, actor = time.time(), scope.principal.actor

    def write(tx: Tx) -> list[PackageRecord]:
        ledger = eims.ledger(tx)
        return [
            _queue_for(eims, ledger, r.eid, r.eid, body, operation, now, actor) for r in records
        ]

    with _errors():
        try:
            packages = await eims.store.write(write)
        except FallbackError as err:
            raise ApiError(
                409, "conflict", f"{err}; nothing of this selection was queued"
            ) from None
    component.touch([p.eid for p in packages])
    return {"items": [package_json(p) for p in packages], "missing": missing}


@router.post(
    "/esim/moves",
    response_model=EimMoveSelectionResult,
    tags=["esim"],
    summary="Move every eUICC of a selection to another eIM identity of this deployment",
)
async def move_esim_selection(
    request: Request, scope: Scoped, body: EimMoveSelectionBody
) -> JsonObject:
    """``POST .../euiccs/{euicc}/eim`` for each eUICC of a selection (``eids``, ``endpoints``,
    ``select``, ``bound_to`` -- e.g. every eUICC bound to the old eIM), in one transaction.
    An eUICC that cannot move now (not confirmed, packages open, already there) stays where it
    is and is listed in ``refused`` with the reason; an eIM not configured here refuses the
    whole request (422)."""
    component = _esim(request)
    eims = component.eims
    if body.eim_id not in eims.eim.deployment.identities:
        raise ApiError(
            422,
            "invalid_input",
            f"eim_id: {body.eim_id!r} is no eIM identity of this deployment "
            "(GET /v1/esim/eims; add one with --eim-identities)",
            field="eim_id",
        )
    records, missing = await _selection(request, scope, eims, body)
    now, actor = time.time(), scope.principal.actor

    def write(
        tx: Tx,
    ) -> tuple[list[EuiccRecord], list[PackageRecord], list[JsonObject]]:
        ledger = eims.ledger(tx)
        moved: list[EuiccRecord] = []
        queued: list[PackageRecord] = []
        refused: list[JsonObject] = []
        for record in records:
            try:  # every refusal is raised before anything of that eUICC is written
                done, package = eims.eim.move_euicc(
                    ledger, record.eid, body.eim_id, now=now, actor=actor,
                    delete_old=body.delete_old,
                )  # fmt: skip
            except (EimMoveRefused, UnknownEim) as err:
                refused.append({"eid": record.eid, "message": str(err)})
                continue
            moved.append(done)
            if package is not None:
                queued.append(package)
        return moved, queued, refused

    with _errors():
        moved, queued, refused = await eims.store.write(write)
    if moved:
        component.touch([r.eid for r in moved])

    def read(tx: Tx) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
        ledger = eims.ledger(tx)
        eids = [r.eid for r in moved]
        return ledger.endpoints(eids), ledger.enabled_profiles(), ledger.open_counts()

    endpoints, enabled, counts = await eims.store.read(read)
    return {
        "items": [
            euicc_json(r, endpoints.get(r.eid), enabled.get(r.eid), counts.get(r.eid, 0))
            for r in moved
        ],
        "delete_packages": [package_json(p) for p in queued],
        "refused": refused,
        "missing": missing,
    }


@router.get(
    "/esim/eims",
    response_model=EimIdentityList,
    tags=["esim"],
    summary="List the eIM identities of this deployment",
)
async def list_eims(request: Request, scope: Scoped) -> JsonObject:
    """Each with its public key (what EUM/eUICC provisioning and another eIM's addEim need),
    its certificate when configured, and how many eUICCs are bound to it."""
    eims = _esim(request).eims
    deployment = eims.eim.deployment
    tenants = scope.principal.tenants
    counts = await eims.store.read(lambda tx: eims.ledger(tx).eim_counts(tenants))
    items = []
    for eim_id, identity in deployment.identities.items():
        public = identity.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        cert = identity.certificate
        items.append(
            {
                "eim_id": eim_id,
                "default": eim_id == deployment.default_eim_id,
                "curve": identity.public_key.curve.name,
                "public_key": public.decode(),
                "certificate": (
                    cert.public_bytes(serialization.Encoding.PEM).decode() if cert else None
                ),
                "euiccs": counts.get(eim_id, 0),
            }
        )
    return {"items": items}
