"""``password_policy``: the global account policies, from ``pwpolicy -getaccountpolicies``.

pwpolicy prints a line ("Getting global account policies") and then an XML property list
whose keys are policy categories (``policyCategoryAuthentication``,
``policyCategoryPasswordContent``, ``policyCategoryPasswordChange``), each an array of
policies. One row per policy, as osquery's password_policy:

======================  =======================================================
column                  from
======================  =======================================================
policy_category         the category key, e.g. policyCategoryPasswordContent
policy_identifier       policyIdentifier (e.g. "ProfilePayload:...:minLength")
policy_content          policyContent, the predicate macOS evaluates
policy_description      policyContentDescription's "en" text, else
                        policyDefaultContentDescription, else ""
policy_parameters       policyParameters as compact JSON, e.g. {"minimumLength":8}
uid                     "" (global policies apply to every user)
======================  =======================================================

Fleet's CIS policies read the minimum length from the English description ("Contain at
least 15 characters."), which is why it is the English one. Per-user policies
(``pwpolicy -u USER``) are not read.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from agent.runner import Runner
from agent.sources.base import ProbeError, Row
from agent.sources.macos.common import make_row, parse_plist

__all__ = ["COMMAND", "collect_password_policy", "password_policy_rows"]

TABLE = "password_policy"
COMMAND = ("/usr/bin/pwpolicy", "-getaccountpolicies")


def _description(policy: dict[str, Any]) -> str:
    described = policy.get("policyContentDescription")
    if isinstance(described, dict):
        english = described.get("en") or described.get("policyDefaultContentDescription")
        if isinstance(english, str):
            return english
    default = policy.get("policyDefaultContentDescription")
    return default if isinstance(default, str) else ""


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def password_policy_rows(output: str) -> list[Row]:
    start = output.find("<?xml")
    if start < 0:
        raise ProbeError(f"{TABLE}: pwpolicy printed no property list: {output.strip()[:80]!r}")
    end = output.find("</plist>", start)
    document = output[start : end + len("</plist>")] if end >= 0 else output[start:]
    policies = parse_plist(document, TABLE)
    rows = []
    for category, entries in policies.items():
        if not isinstance(entries, list):
            continue
        for policy in entries:
            if not isinstance(policy, dict):
                continue
            parameters = policy.get("policyParameters")
            values = {
                "policy_category": category,
                "policy_identifier": str(policy.get("policyIdentifier", "")),
                "policy_content": str(policy.get("policyContent", "")),
                "policy_description": _description(policy),
                "policy_parameters": json.dumps(
                    parameters, sort_keys=True, separators=(",", ":"), default=_json_value
                )
                if isinstance(parameters, dict)
                else "",
            }
            rows.append(make_row(TABLE, values))
    return rows


def collect_password_policy(runner: Runner, timeout: float) -> list[Row]:
    return password_policy_rows(runner.run(COMMAND, timeout=timeout, with_stderr=True))
