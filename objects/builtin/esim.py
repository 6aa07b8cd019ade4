"""Object 3443, eSIM IoT 1.0 (GSMA): the ESipa tunnel between fleetloop's eIM and the IPA.

SGP.32 lets the eIM reach a device's IPA over LwM2M: the eIM writes an ASN.1 DER message to
resource 2, the IPA answers in resource 3 (delivered by Send or an observation notification),
and executing resource 4 acknowledges a read answer so the IPA can produce the next one. The
``sgp32`` package drives this; the codes of resource 0 are :class:`objects.enums.ESimIoTState`.
"""

from objects.builtin._dsl import (
    INTEGER,
    MANDATORY,
    NONE,
    OPAQUE,
    OPTIONAL,
    SINGLE,
    STRING,
    obj,
    res,
)

ESIM_IOT = obj(
    3443,
    "eSIM IoT",
    "ESipa transport between an eIM and the IPA of one eUICC (GSMA SGP.32).",
    version="1.0",
    lwm2m="1.0",
    instances=SINGLE,
    presence=OPTIONAL,
    resources=[
        res(0, "State", "R", SINGLE, MANDATORY, INTEGER,
            "0 ready for an eIM message, 1 busy (writing resource 2 is refused)."),
        res(1, "EID", "R", SINGLE, MANDATORY, STRING, "EID of the eUICC this instance serves."),
        res(2, "eIM message", "W", SINGLE, MANDATORY, OPAQUE,
            "eIM to IPA message, ASN.1 DER (SGP.32 6.3.1)."),
        res(3, "IPA message", "R", SINGLE, MANDATORY, OPAQUE,
            "IPA to eIM message, ASN.1 DER (SGP.32 6.3.1)."),
        res(4, "Clear IPA message", "E", SINGLE, MANDATORY, NONE,
            "Confirm the IPA message was received and clear resource 3."),
    ],
)  # fmt: skip
