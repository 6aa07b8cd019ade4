"""Object 5, Firmware Update 1.2: the state machine firmware campaigns drive.

The server pushes (Package) or points to (Package URI) an image, observes State and Update
Result, executes Update once the image is Downloaded, and may Cancel. The numeric codes of
State, Update Result, protocol support and delivery method are in :mod:`objects.enums`.
"""

from objects.builtin._dsl import (
    BOOLEAN,
    INTEGER,
    MANDATORY,
    MULTIPLE,
    NONE,
    OPAQUE,
    OPTIONAL,
    SINGLE,
    STRING,
    TIME,
    UNSIGNED,
    obj,
    res,
)

FIRMWARE_UPDATE = obj(
    5,
    "Firmware Update",
    "Download and install a firmware image, reporting state and result.",
    version="1.2",
    lwm2m="1.1",
    instances=SINGLE,
    presence=OPTIONAL,
    resources=[
        res(0, "Package", "W", SINGLE, MANDATORY, OPAQUE,
            "Firmware image pushed by the server (block-wise)."),
        res(1, "Package URI", "RW", SINGLE, MANDATORY, STRING,
            "URI the client downloads the image from; empty resets the state machine.",
            range="0..255"),
        res(2, "Update", "E", SINGLE, MANDATORY, NONE, "Install the downloaded image."),
        res(3, "State", "R", SINGLE, MANDATORY, INTEGER,
            "Idle, Downloading, Downloaded, Updating (enums.FirmwareUpdateState).",
            range="0..3"),
        res(5, "Update Result", "R", SINGLE, MANDATORY, INTEGER,
            "Outcome of the last download or update (enums.FirmwareUpdateResult).",
            range="0..11"),
        res(6, "PkgName", "R", SINGLE, OPTIONAL, STRING,
            "Name of the downloaded package.", range="0..255"),
        res(7, "PkgVersion", "R", SINGLE, OPTIONAL, STRING,
            "Version of the downloaded package.", range="0..255"),
        res(8, "Firmware Update Protocol Support", "R", MULTIPLE, OPTIONAL, INTEGER,
            "Download protocols the client supports (enums.FirmwareProtocol).",
            range="0..5"),
        res(9, "Firmware Update Delivery Method", "R", SINGLE, MANDATORY, INTEGER,
            "Pull, push or both (enums.FirmwareDeliveryMethod).", range="0..2"),
        res(10, "Cancel", "E", SINGLE, OPTIONAL, NONE,
            "Abort a download or a deferred update."),
        res(11, "Severity", "RW", SINGLE, OPTIONAL, INTEGER,
            "Critical, mandatory or optional (enums.FirmwareSeverity).", range="0..2"),
        res(12, "Last State Change Time", "R", SINGLE, OPTIONAL, TIME,
            "When State last changed."),
        res(13, "Maximum Defer Period", "RW", SINGLE, OPTIONAL, UNSIGNED,
            "How long a user may defer the update.", units="s"),
        res(14, "Automatic Upgrade at Download", "RW", SINGLE, OPTIONAL, BOOLEAN,
            "Install right after download, without an Update execute."),
    ],
)  # fmt: skip
