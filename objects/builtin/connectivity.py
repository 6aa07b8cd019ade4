"""Objects 4 (Connectivity Monitoring 1.3) and 7 (Connectivity Statistics 1.0).

These feed fleet diagnostics: the bearer, signal strength, cell and operator (SMCC/SMNC) a
device is on, and the traffic it has sent, which is what an operator looks at first when a
region or carrier misbehaves.
"""

from objects.builtin._dsl import (
    INTEGER,
    MANDATORY,
    MULTIPLE,
    NONE,
    OPTIONAL,
    SINGLE,
    STRING,
    obj,
    res,
)

CONNECTIVITY_MONITORING = obj(
    4,
    "Connectivity Monitoring",
    "Current bearer, radio signal, addresses and serving cell.",
    version="1.3",
    lwm2m="1.1",
    instances=SINGLE,
    presence=OPTIONAL,
    resources=[
        res(0, "Network Bearer", "R", SINGLE, MANDATORY, INTEGER,
            "Bearer in use (enums.NetworkBearer).", range="0..50"),
        res(1, "Available Network Bearer", "R", MULTIPLE, MANDATORY, INTEGER,
            "Bearers currently available.", range="0..50"),
        res(2, "Radio Signal Strength", "R", SINGLE, MANDATORY, INTEGER,
            "RSSI/RSCP/RSRP/NRSRP depending on the bearer.", units="dBm"),
        res(3, "Link Quality", "R", SINGLE, OPTIONAL, INTEGER,
            "Bearer-specific link quality, e.g. RSRQ on LTE."),
        res(4, "IP Addresses", "R", MULTIPLE, MANDATORY, STRING, "Device IP addresses."),
        res(5, "Router IP Addresses", "R", MULTIPLE, OPTIONAL, STRING,
            "Next-hop router addresses."),
        res(6, "Link Utilization", "R", SINGLE, OPTIONAL, INTEGER,
            "Average link utilisation in percent.", range="0..100", units="/100"),
        res(7, "APN", "R", MULTIPLE, OPTIONAL, STRING, "APNs in use."),
        res(8, "Cell ID", "R", SINGLE, OPTIONAL, INTEGER, "Serving cell identifier."),
        res(9, "SMNC", "R", SINGLE, OPTIONAL, INTEGER,
            "Serving mobile network code.", range="0..999"),
        res(10, "SMCC", "R", SINGLE, OPTIONAL, INTEGER,
            "Serving mobile country code.", range="0..999"),
        res(11, "SignalSNR", "R", SINGLE, OPTIONAL, INTEGER,
            "Signal to noise ratio.", units="dB"),
        res(12, "LAC", "R", SINGLE, OPTIONAL, INTEGER, "Location (tracking) area code."),
        res(13, "Coverage Enhancement Level", "R", SINGLE, OPTIONAL, INTEGER,
            "NB-IoT/LTE-M coverage enhancement (enums.CoverageEnhancementLevel).",
            range="0..4"),
    ],
)  # fmt: skip

CONNECTIVITY_STATISTICS = obj(
    7,
    "Connectivity Statistics",
    "Traffic counters collected between Start and Stop.",
    version="1.0",
    lwm2m="1.0",
    instances=SINGLE,
    presence=OPTIONAL,
    resources=[
        res(0, "SMS Tx Counter", "R", SINGLE, OPTIONAL, INTEGER, "SMS sent."),
        res(1, "SMS Rx Counter", "R", SINGLE, OPTIONAL, INTEGER, "SMS received."),
        res(2, "Tx Data", "R", SINGLE, OPTIONAL, INTEGER,
            "Data sent in the collection period (kB)."),
        res(3, "Rx Data", "R", SINGLE, OPTIONAL, INTEGER,
            "Data received in the collection period (kB)."),
        res(4, "Max Message Size", "R", SINGLE, OPTIONAL, INTEGER,
            "Largest packet seen.", units="B"),
        res(5, "Average Message Size", "R", SINGLE, OPTIONAL, INTEGER,
            "Mean packet size.", units="B"),
        res(6, "Start", "E", SINGLE, MANDATORY, NONE, "Reset the counters and start counting."),
        res(7, "Stop", "E", SINGLE, MANDATORY, NONE, "Stop counting."),
        res(8, "Collection Period", "RW", SINGLE, OPTIONAL, INTEGER,
            "Counting stops by itself after this long; 0 means until Stop.", units="s"),
    ],
)  # fmt: skip
