"""The ``frameworks:`` block of a check: which controls of which frameworks it evidences.

Each framework has its own shape in the pack, chosen so the edition is never ambiguous:

- ``cis``: ``[{benchmark: "<benchmark title and version>", section: "5.1.20"}, ...]``
- ``cis_controls_v8``: ``["4.1", ...]`` (safeguard ids)
- ``nist_800_53r5``: ``["AC-6(2)", "CM-6", ...]``
- ``cjis``: ``{version: "6.0", sections: ["5.5.2.1", ...]}``
- ``pci_dss_v4``: ``["2.2.4", "A1.1.1", ...]``

Control ids are checked against each framework's id syntax, so a typo ("AC6") or a number
YAML mangled (``4.10`` read as 4.1) is refused at load instead of reaching an auditor.
"""

from __future__ import annotations

import re

import yaml

from collector.policy.model import FRAMEWORKS, FrameworkRef
from collector.policy.yamlnodes import Where, mapping, require, string, string_list

__all__ = ["parse_frameworks"]

_SECTION = re.compile(r"\d+(\.\d+)*")
_SAFEGUARD = re.compile(r"\d+\.\d+")
_NIST = re.compile(r"[A-Z]{2}-\d+(\(\d+\))?")
_PCI = re.compile(r"(A\d+\.)?\d+(\.\d+)*")
_VERSION = re.compile(r"\d+(\.\d+)*")

#: Frameworks given as a plain list of control ids: key -> (id syntax, how to describe it).
_LISTS: dict[str, tuple[re.Pattern[str], str]] = {
    "cis_controls_v8": (_SAFEGUARD, "a CIS Controls v8 safeguard id (e.g. 4.1)"),
    "nist_800_53r5": (_NIST, "a NIST SP 800-53 control id (e.g. AC-6 or AC-6(2))"),
    "pci_dss_v4": (_PCI, "a PCI DSS v4 requirement id (e.g. 2.2.4)"),
}


def parse_frameworks(node: yaml.Node, where: Where) -> dict[str, tuple[FrameworkRef, ...]] | None:
    """The check's framework mappings, or None when anything is wrong (reported)."""
    found = mapping(node, where, "frameworks", FRAMEWORKS)
    if found is None:
        return None
    if not node.value:
        where.report(node, f"frameworks must map at least one of: {', '.join(FRAMEWORKS)}")
        return None
    result: dict[str, tuple[FrameworkRef, ...]] = {}
    ok = len(found) == len(node.value)
    for key, (_, value) in found.items():
        refs = _parse_one(key, value, where)
        if refs is None:
            ok = False
        else:
            result[key] = refs
    return result if ok else None


def _parse_one(key: str, node: yaml.Node, where: Where) -> tuple[FrameworkRef, ...] | None:
    label = f"frameworks.{key}"
    if key in _LISTS:
        pattern, kind = _LISTS[key]
        ids = string_list(node, where, label, pattern, kind)
        return None if ids is None else tuple(FrameworkRef(key, i) for i in ids)
    if key == "cjis":
        return _parse_cjis(node, where, label)
    return _parse_cis(node, where, label)


def _parse_cjis(node: yaml.Node, where: Where, label: str) -> tuple[FrameworkRef, ...] | None:
    found = mapping(node, where, label, ("version", "sections"))
    if found is None:
        return None
    require(node, found, where, label, ("version", "sections"))
    if len(found) != 2:
        return None
    version = string(found["version"][1], where, f"{label}.version")
    if version is not None and not _VERSION.fullmatch(version):
        where.report(found["version"][1], f"{label}.version '{version}' is not a version (6.0)")
        version = None
    sections = string_list(
        found["sections"][1], where, f"{label}.sections", _SECTION, "a section number (5.5.2.1)"
    )
    if version is None or sections is None:
        return None
    return tuple(FrameworkRef("cjis", section, version) for section in sections)


def _parse_cis(node: yaml.Node, where: Where, label: str) -> tuple[FrameworkRef, ...] | None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        where.report(node, f"{label} must be a non-empty list of {{benchmark, section}}")
        return None
    refs: list[FrameworkRef] = []
    for index, item in enumerate(node.value):
        item_label = f"{label}[{index}]"
        found = mapping(item, where, item_label, ("benchmark", "section"))
        if found is None:
            continue
        require(item, found, where, item_label, ("benchmark", "section"))
        if len(found) != 2:
            continue
        benchmark = string(found["benchmark"][1], where, f"{item_label}.benchmark")
        section = string(found["section"][1], where, f"{item_label}.section")
        if section is not None and not _SECTION.fullmatch(section):
            where.report(found["section"][1], f"{item_label}.section '{section}' is not 1.2.3")
            section = None
        if benchmark is not None and section is not None:
            refs.append(FrameworkRef("cis", section, benchmark))
    return tuple(refs) if len(refs) == len(node.value) else None
