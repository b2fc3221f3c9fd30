"""``bitlocker_info``: BitLocker state of every volume, as osquery reads it.

osquery queries the ``Win32_EncryptableVolume`` CIM class
(``root/cimv2/Security/MicrosoftVolumeEncryption``) and calls its ``GetVersion``,
``GetConversionStatus`` and ``GetLockStatus`` methods; so does this probe, so the numbers
are the same ones. (``Get-BitLockerVolume`` wraps the same class but renames its enums;
``manage-bde -status`` prints translated text.) The class is readable by administrators
only: without admin rights the probe fails with "Access denied" and the table carries it.

The script prints, per volume, ``{volume, version, conversionStatus, lockStatus,
keyProtectorTypes}``: the shape cnquery's BitLocker script prints too, so its published
recording is a test input. Decodings, as osquery's bitlocker_info reports them:

====================  =====================================  ============================
column                source                                 values
====================  =====================================  ============================
conversion_status     volume.ConversionStatus                0 FullyDecrypted,
                                                             1 FullyEncrypted,
                                                             2 EncryptionInProgress,
                                                             3 DecryptionInProgress,
                                                             4 EncryptionPaused,
                                                             5 DecryptionPaused
protection_status     volume.ProtectionStatus                0 off, 1 on, 2 unknown
                                                             (locked volume)
encryption_method     volume.EncryptionMethod                0 None,
                                                             1 AES_128_WITH_DIFFUSER,
                                                             2 AES_256_WITH_DIFFUSER,
                                                             3 AES_128, 4 AES_256,
                                                             5 HARDWARE_ENCRYPTION,
                                                             6 XTS_AES_128, 7 XTS_AES_256,
                                                             other UNKNOWN
version               version.Version                        FVE metadata version, -1 if
                                                             the method failed
percentage_encrypted  conversionStatus.EncryptionPercentage  0-100, -1 if failed
lock_status           lockStatus.LockStatus                  0 unlocked, 1 locked, -1
protector_types       keyProtectorTypes (GetKeyProtectors    names, comma-separated:
                      and GetKeyProtectorType)               Tpm, ExternalKey,
                                                             RecoveryPassword, TpmPin,
                                                             TpmStartupKey,
                                                             TpmPinStartupKey, PublicKey,
                                                             Password, TpmNetworkKey,
                                                             AdAccountOrGroup
====================  =====================================  ============================

The protector names are those Get-BitLockerVolume shows for the KeyProtectorType numbers
1-10 (0 is Unknown). conversion_status and protection_status stay numbers, as in osquery.
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import Row
from agent.sources.windows.common import (
    Record,
    integer,
    make_row,
    powershell_json,
    run_json,
    text,
)

__all__ = ["COMMAND", "bitlocker_rows", "collect_bitlocker_info", "encryption_method"]

TABLE = "bitlocker_info"

_METHODS = {
    0: "None",
    1: "AES_128_WITH_DIFFUSER",
    2: "AES_256_WITH_DIFFUSER",
    3: "AES_128",
    4: "AES_256",
    5: "HARDWARE_ENCRYPTION",
    6: "XTS_AES_128",
    7: "XTS_AES_256",
}
_PROTECTORS = (
    "Unknown",
    "Tpm",
    "ExternalKey",
    "RecoveryPassword",
    "TpmPin",
    "TpmStartupKey",
    "TpmPinStartupKey",
    "PublicKey",
    "Password",
    "TpmNetworkKey",
    "AdAccountOrGroup",
)

_METHOD_RESULT = "(Invoke-CimMethod -InputObject $v -MethodName {method})"

COMMAND = powershell_json(
    "Get-CimInstance -Namespace root/cimv2/Security/MicrosoftVolumeEncryption "
    "-ClassName Win32_EncryptableVolume | ForEach-Object { $v = $_; "
    "[pscustomobject]@{ "
    "volume = $v | Select-Object DeviceID, DriveLetter, PersistentVolumeID, "
    "ConversionStatus, ProtectionStatus, EncryptionMethod, VolumeType; "
    f"version = {_METHOD_RESULT.format(method='GetVersion')} | Select-Object Version; "
    f"conversionStatus = {_METHOD_RESULT.format(method='GetConversionStatus')} | "
    "Select-Object ConversionStatus, EncryptionPercentage; "
    f"lockStatus = {_METHOD_RESULT.format(method='GetLockStatus')} | Select-Object LockStatus; "
    f"keyProtectorTypes = @({_METHOD_RESULT.format(method='GetKeyProtectors')}"
    ".VolumeKeyProtectorID | ForEach-Object { (Invoke-CimMethod -InputObject $v "
    "-MethodName GetKeyProtectorType -Arguments @{ VolumeKeyProtectorID = $_ })"
    ".KeyProtectorType }) } }"
)


def encryption_method(value: object) -> str:
    """osquery's name for an EncryptionMethod number (UNKNOWN for any other)."""
    number = integer(value)
    return _METHODS.get(int(number), "UNKNOWN") if number else "UNKNOWN"


def _method_result(record: Record, key: str, name: str) -> str:
    result = record.get(key)
    value = integer(result.get(name)) if isinstance(result, dict) else ""
    return value or "-1"


def _protectors(value: object) -> str:
    numbers = value if isinstance(value, list) else [] if value is None else [value]
    names = []
    for number in numbers:
        index = int(integer(number) or 0)
        names.append(_PROTECTORS[index] if 0 <= index < len(_PROTECTORS) else "Unknown")
    return ",".join(names)


def bitlocker_rows(records: list[Record]) -> list[Row]:
    """One row per encryptable volume (decodings in the module docstring)."""
    rows = []
    for record in records:
        volume = record.get("volume") or {}
        rows.append(
            make_row(
                TABLE,
                {
                    "device_id": text(volume.get("DeviceID")),
                    "drive_letter": text(volume.get("DriveLetter")),
                    "persistent_volume_id": text(volume.get("PersistentVolumeID")),
                    "conversion_status": integer(volume.get("ConversionStatus")),
                    "protection_status": integer(volume.get("ProtectionStatus")),
                    "encryption_method": encryption_method(volume.get("EncryptionMethod")),
                    "protector_types": _protectors(record.get("keyProtectorTypes")),
                    "version": _method_result(record, "version", "Version"),
                    "percentage_encrypted": _method_result(
                        record, "conversionStatus", "EncryptionPercentage"
                    ),
                    "lock_status": _method_result(record, "lockStatus", "LockStatus"),
                },
            )
        )
    return rows


def collect_bitlocker_info(runner: Runner, timeout: float) -> list[Row]:
    return bitlocker_rows(run_json(runner, COMMAND, TABLE, timeout))
