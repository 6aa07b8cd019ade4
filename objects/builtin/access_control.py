"""Object 2, LwM2M Access Control 1.1: per-instance rights for each server.

Only relevant when a device talks to more than one DM server (e.g. a tenant's own server beside
fleetloop); fleetloop writes ACLs at bootstrap so its own account keeps control of what it owns.
"""

from objects.builtin._dsl import INTEGER, MANDATORY, MULTIPLE, OPTIONAL, SINGLE, obj, res

ACCESS_CONTROL = obj(
    2,
    "LwM2M Access Control",
    "Which server may do what on one object instance.",
    version="1.1",
    lwm2m="1.0",
    instances=MULTIPLE,
    presence=OPTIONAL,
    resources=[
        res(0, "Object ID", "R", SINGLE, MANDATORY, INTEGER,
            "Object the rights apply to.", range="1..65534"),
        res(1, "Object Instance ID", "R", SINGLE, MANDATORY, INTEGER,
            "Instance the rights apply to; 65535 means Create on the object.",
            range="0..65535"),
        res(2, "ACL", "RW", MULTIPLE, OPTIONAL, INTEGER,
            "Rights bit mask per Short Server ID (instance id): R1 W2 E4 D8 C16.",
            range="0..31"),
        res(3, "Access Control Owner", "RW", SINGLE, MANDATORY, INTEGER,
            "Short Server ID owning this instance; 65535 means bootstrap.",
            range="0..65535"),
    ],
)  # fmt: skip
