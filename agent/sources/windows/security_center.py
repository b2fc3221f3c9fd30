"""``windows_security_products`` and ``windows_security_center``: what Windows Security sees.

``windows_security_products`` lists the antivirus, antispyware and firewall products
registered with Windows Security Center, read from the ``root/SecurityCenter2`` CIM classes
``AntiVirusProduct``, ``AntiSpywareProduct`` and ``FirewallProduct`` (the classes exist on
client Windows only: on Windows Server the probe fails, and the table carries that error).
Each product's ``productState`` packs its state into bits, decoded as osquery reports them
from the Security Center API (values from Microsoft's WSC_SECURITY_PRODUCT_STATE and
WSC_SECURITY_SIGNATURE_STATUS, as the bits are documented by the products that set them):

===============================  ===========  ===========================================
bits of productState             value        column
===============================  ===========  ===========================================
``productState & 0xF000``        0x0000       state = Off
                                 0x1000       state = On
                                 0x2000       state = Snoozed
                                 0x3000       state = Expired
``productState & 0x00F0``        0x00         signatures_up_to_date = 1
                                 0x10         signatures_up_to_date = 0
===============================  ===========  ===========================================

Any other state nibble is reported as ``Unknown``. Firewall products have no signatures:
their ``signatures_up_to_date`` is "". ``remediation_path`` is the product's
``pathToSignedProductExe`` (``windowsdefender://`` for Microsoft Defender), and
``state_timestamp`` the class's ``timestamp`` as written there.

``windows_security_center`` asks the Security Center API itself
(``WscGetSecurityProviderHealth`` in wscapi.dll, the call osquery makes) for the health of
each provider: 0 Good, 1 Not Monitored, 2 Poor, 3 Snoozed; a failed call reads "Error".
PowerShell reaches the DLL through ``Add-Type`` (compiled once per probe run).
"""

from __future__ import annotations

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.windows.common import (
    Record,
    integer,
    make_row,
    powershell_json,
    run_json,
    text,
)

__all__ = [
    "CENTER_COMMAND",
    "PRODUCTS_COMMAND",
    "collect_security_center",
    "collect_security_products",
    "product_rows",
    "product_state",
    "security_center_rows",
]

PRODUCTS_TABLE = "windows_security_products"
CENTER_TABLE = "windows_security_center"

_KINDS = {"antiVirus": "Antivirus", "antiSpyware": "Antispyware", "firewall": "Firewall"}
_CLASSES = {
    "antiVirus": "AntiVirusProduct",
    "antiSpyware": "AntiSpywareProduct",
    "firewall": "FirewallProduct",
}
_STATES = {0x0: "Off", 0x1: "On", 0x2: "Snoozed", 0x3: "Expired"}

PRODUCTS_COMMAND = powershell_json(
    "[pscustomobject]@{ "
    + "; ".join(
        f"{key} = @(Get-CimInstance -Namespace root/SecurityCenter2 -ClassName {name} | "
        "Select-Object displayName, productState, timestamp, pathToSignedProductExe)"
        for key, name in _CLASSES.items()
    )
    + " }"
)

#: Provider bit (WSC_SECURITY_PROVIDER) for each column of windows_security_center.
_PROVIDERS = {
    "firewall": 0x1,
    "autoupdate": 0x2,
    "antivirus": 0x4,
    "internet_settings": 0x10,
    "user_account_control": 0x20,
    "windows_security_center_service": 0x40,
}
_HEALTH = {0: "Good", 1: "Not Monitored", 2: "Poor", 3: "Snoozed"}

CENTER_COMMAND = powershell_json(
    "$q = [char]34; "
    "Add-Type -Namespace Posture -Name Wsc -MemberDefinition ('[DllImport(' + $q + "
    "'wscapi.dll' + $q + ')] public static extern int WscGetSecurityProviderHealth"
    "(int providers, out int health);'); "
    "$health = [ordered]@{}; "
    + "".join(
        f"$h = 0; if ([Posture.Wsc]::WscGetSecurityProviderHealth({bit}, [ref]$h) -eq 0) "
        f"{{ $health.{column} = $h }} else {{ $health.{column} = -1 }}; "
        for column, bit in _PROVIDERS.items()
    )
    + "[pscustomobject]$health"
)


def product_state(value: object) -> tuple[str, str]:
    """``(state, signatures_up_to_date)`` from a productState (see the module table)."""
    number = integer(value)
    if not number:
        return "", ""
    bits = int(number)
    state = _STATES.get((bits >> 12) & 0xF, "Unknown")
    return state, "0" if bits & 0x00F0 else "1"


def _product_row(kind: str, record: Record) -> Row:
    state, up_to_date = product_state(record.get("productState"))
    return make_row(
        PRODUCTS_TABLE,
        {
            "type": kind,
            "name": text(record.get("displayName")),
            "state": state,
            "state_timestamp": text(record.get("timestamp")),
            "remediation_path": text(record.get("pathToSignedProductExe")),
            "signatures_up_to_date": "" if kind == "Firewall" else up_to_date,
        },
    )


def product_rows(wrapper: Record) -> list[Row]:
    """Rows from ``{antiVirus: [...], antiSpyware: [...], firewall: [...]}``."""
    rows: list[Row] = []
    for key, kind in _KINDS.items():
        products = wrapper.get(key) or []
        if not isinstance(products, list):
            products = [products]
        rows.extend(
            _product_row(kind, product) for product in products if isinstance(product, dict)
        )
    return rows


def security_center_rows(record: Record) -> list[Row]:
    """The one row of provider healths, each decoded as in the module docstring."""
    values = {}
    for column in _PROVIDERS:
        health = record.get(column)
        values[column] = _HEALTH.get(health, "Error") if isinstance(health, int) else "Error"
    return [make_row(CENTER_TABLE, values)]


def _single(records: list[Record], table: str) -> Record:
    if len(records) != 1:
        raise ProbeError(f"{table}: expected one object from PowerShell, got {len(records)}")
    return records[0]


def collect_security_products(runner: Runner, timeout: float) -> list[Row]:
    records = run_json(runner, PRODUCTS_COMMAND, PRODUCTS_TABLE, timeout)
    return product_rows(_single(records, PRODUCTS_TABLE))


def collect_security_center(runner: Runner, timeout: float) -> list[Row]:
    records = run_json(runner, CENTER_COMMAND, CENTER_TABLE, timeout)
    return security_center_rows(_single(records, CENTER_TABLE))
