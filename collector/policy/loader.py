"""Load policy packs from YAML, refusing anything wrong with a message naming file and line.

A pack is a directory holding ``pack.yaml``::

    name: city-baseline            # required, [a-z0-9-]+
    version: "1.0.0"               # required, a string (quote it)
    description: ...               # required
    checks:                        # required, at least one
      - id: city.linux.ssh-root-login-disabled   # required, [a-z0-9]+(.[a-z0-9-]+)+, unique
        title: ...                 # required
        description: ...           # required
        rationale: ...             # required
        remediation: ...           # required
        severity: high             # required: low | medium | high | critical
        platforms: [linux]         # required, non-empty subset of linux | darwin | windows
        frameworks:                # required, at least one of these keys
          cis: [{benchmark: "CIS Debian Linux 12 Benchmark v1.1.0", section: "5.1.20"}]
          cis_controls_v8: ["4.1"]
          nist_800_53r5: ["AC-6(2)", "CM-6"]
          cjis: {version: "6.0", sections: ["5.5.2.1"]}
          pci_dss_v4: ["2.2.4"]
        query: SELECT 1 FROM ...   # required; pass = one row or more, fail = no rows
        applies: SELECT 1 FROM ... # optional; no rows = not applicable
        evidence: SELECT ...       # optional; rows shown to auditors (first 50)

Each SQL statement must be one SELECT over the catalogue's tables and columns (osquery's
names, so Fleet's queries load unmodified) that compiles; it may use the functions of
``collector.policy.sandbox``. A statement reading ``file``, ``hash`` or ``file_lines`` must
name its paths (``path = '...'``, ``path IN (...)``, ``path LIKE '...'``), and one reading
``registry`` its keys (``key = '...'``, or a value's ``path``), because agents collect only
what a collection plan names (``collector.policy.paths``). A column osquery fills only on some
platforms may not be named by a check targeting others (Fleet's packs have such bugs).

Every problem of every pack is collected before ``PolicyError`` is raised, one line each:
``<file>:<line>: check <id>: <what is wrong>``, so an author fixes a pack in one pass.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from collector.policy.frameworks import parse_frameworks
from collector.policy.model import Check, Pack, Severity
from collector.policy.sqlcheck import Analysis, CatalogueSchema, merge_reads
from collector.policy.yamlnodes import Where, mapping, require, string, string_list

__all__ = ["PolicyError", "load_pack", "load_packs"]

PACK_FILE = "pack.yaml"
_PACK_KEYS = ("name", "version", "description", "checks")
_CHECK_KEYS = (
    "id",
    "title",
    "description",
    "rationale",
    "remediation",
    "severity",
    "platforms",
    "frameworks",
    "query",
    "applies",
    "evidence",
)
_OPTIONAL = ("applies", "evidence")
_TEXT = ("title", "description", "rationale", "remediation")
_PACK_NAME = re.compile(r"[a-z0-9-]+")
_CHECK_ID = re.compile(r"[a-z0-9]+(\.[a-z0-9-]+)+")
_PLATFORM = re.compile(r"linux|darwin|windows")
#: libyaml's parser where PyYAML was built with it: composing the shipped packs takes
#: 0.02 s instead of 0.28 s, paid by every command that loads them (a report, ``serve``).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PolicyError(Exception):
    """One or more packs are invalid; ``problems`` has one located sentence per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_pack(path: Path) -> Pack:
    """Load and validate the pack in directory ``path`` (or the pack file itself).

    Raises PolicyError listing every problem found.
    """
    schema = CatalogueSchema()
    try:
        pack, problems = _load(path if path.is_file() else path / PACK_FILE, schema)
    finally:
        schema.close()
    if pack is not None:
        problems += _duplicates(pack.checks)
    if problems or pack is None:
        raise PolicyError(problems)
    return pack


def load_packs(directory: Path) -> list[Pack]:
    """Load every ``*/pack.yaml`` under ``directory``, sorted by directory name.

    Check ids must be unique across all packs. Raises PolicyError listing every problem of
    every pack.
    """
    schema = CatalogueSchema()
    packs: list[Pack] = []
    problems: list[str] = []
    try:
        for pack_file in sorted(directory.glob(f"*/{PACK_FILE}")):
            pack, found = _load(pack_file, schema)
            problems += found
            if pack is not None:
                packs.append(pack)
    finally:
        schema.close()
    problems += _duplicates([check for pack in packs for check in pack.checks])
    if problems:
        raise PolicyError(problems)
    return packs


def _duplicates(checks: Iterable[Check]) -> list[str]:
    first: dict[str, Check] = {}
    problems = []
    for check in checks:
        seen = first.setdefault(check.id, check)
        if seen is not check:
            problems.append(
                f"{check.source}:{check.line}: check {check.id}: duplicate id "
                f"(also in {seen.source}:{seen.line})"
            )
    return problems


def _load(pack_file: Path, schema: CatalogueSchema) -> tuple[Pack | None, list[str]]:
    """The pack, holding the checks that are valid, and every problem found.

    The pack is returned even when it has problems, so that check ids can still be compared
    across packs; it is None only when the file cannot be read as YAML at all.
    """
    try:
        data = pack_file.read_bytes()
        root = yaml.compose(data.decode("utf-8"), Loader=_LOADER)
    except OSError as exc:
        return None, [f"{pack_file}: cannot read: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return None, [f"{pack_file}: not UTF-8 text"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        return None, [f"{pack_file}:{line} invalid YAML: {getattr(exc, 'problem', None) or exc}"]
    if root is None:
        return None, [f"{pack_file}:1: pack: the file is empty"]
    problems: list[str] = []
    where = Where(str(pack_file), "pack", problems)
    found = mapping(root, where, "", _PACK_KEYS) or {}
    if found:
        require(root, found, where, "", _PACK_KEYS)
    name = _text(found, "name", where)
    if name is not None and not _PACK_NAME.fullmatch(name):
        where.report(found["name"][1], f"name '{name}' must match [a-z0-9-]+")
    checks = _checks(found["checks"][1], name or "", where, schema) if "checks" in found else []
    pack = Pack(
        name=name or "",
        version=_text(found, "version", where) or "",
        description=_text(found, "description", where) or "",
        sha256=hashlib.sha256(data).hexdigest(),
        path=pack_file,
        checks=tuple(checks),
    )
    return pack, problems


_Found = dict[str, tuple[yaml.Node, yaml.Node]]


def _text(found: _Found, key: str, where: Where) -> str | None:
    return string(found[key][1], where, key) if key in found else None


def _checks(node: yaml.Node, pack: str, where: Where, schema: CatalogueSchema) -> list[Check]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        where.report(node, "checks must be a non-empty list of checks")
        return []
    checks = []
    for index, item in enumerate(node.value):
        check_where = Where(where.file, f"check #{index + 1}", where.problems)
        check = _check(item, pack, check_where, schema)
        if check is not None:
            checks.append(check)
    return checks


def _check(node: yaml.Node, pack: str, where: Where, schema: CatalogueSchema) -> Check | None:
    """One check, or None when anything about it is wrong (every problem reported)."""
    before = len(where.problems)
    _name_check(node, where)
    found = mapping(node, where, "", _CHECK_KEYS)
    if found is None:
        return None
    check_id = _check_id(found, where)
    require(node, found, where, "", [key for key in _CHECK_KEYS if key not in _OPTIONAL])
    texts = {key: _text(found, key, where) for key in _TEXT}
    severity = _severity(found, where)
    platforms = _platforms(found, where)
    frameworks = parse_frameworks(found["frameworks"][1], where) if "frameworks" in found else None
    statements = _statements(found, where, platforms or frozenset(), schema)
    title, description, rationale, remediation = (texts[key] for key in _TEXT)
    if (
        len(where.problems) > before
        or check_id is None
        or title is None
        or description is None
        or rationale is None
        or remediation is None
        or severity is None
        or platforms is None
        or frameworks is None
        or statements is None
    ):
        return None
    sql, analyses = statements
    columns, paths = merge_reads(analyses)
    return Check(
        id=check_id,
        title=title,
        description=description,
        rationale=rationale,
        remediation=remediation,
        severity=severity,
        platforms=platforms,
        frameworks=frameworks,
        query=sql["query"],
        applies=sql.get("applies"),
        evidence=sql.get("evidence"),
        tables=frozenset(columns),
        paths=paths,
        pack=pack,
        source=where.file,
        line=node.start_mark.line + 1,
        columns=columns,
    )


def _name_check(node: yaml.Node, where: Where) -> None:
    """Name the check by its id in every problem, once the id is known to be usable."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "id" and _CHECK_ID.fullmatch(str(value.value)):
                where.subject = f"check {value.value}"


def _check_id(found: _Found, where: Where) -> str | None:
    """The check's id, checked against the id syntax."""
    check_id = _text(found, "id", where)
    if check_id is None:
        return None
    if not _CHECK_ID.fullmatch(check_id):
        where.report(
            found["id"][1],
            f"id '{check_id}' must be lowercase dotted words, e.g. city.linux.ssh-root-login",
        )
        return None
    return check_id


def _severity(found: _Found, where: Where) -> Severity | None:
    value = _text(found, "severity", where)
    if value is None:
        return None
    if value not in Severity.__members__.values():
        choices = ", ".join(Severity)
        where.report(found["severity"][1], f"severity '{value}' must be one of {choices}")
        return None
    return Severity(value)


def _platforms(found: _Found, where: Where) -> frozenset[str] | None:
    if "platforms" not in found:
        return None
    kind = "a platform (linux, darwin or windows)"
    values = string_list(found["platforms"][1], where, "platforms", _PLATFORM, kind)
    return None if values is None else frozenset(values)


def _statements(
    found: _Found, where: Where, platforms: frozenset[str], schema: CatalogueSchema
) -> tuple[dict[str, str], list[Analysis]] | None:
    """Query, applies and evidence with what each reads, or None (problems reported)."""
    statements: dict[str, str] = {}
    analyses: list[Analysis] = []
    for key in ("query", "applies", "evidence"):
        if key not in found:
            continue
        key_node, value_node = found[key]
        sql = string(value_node, where, key)
        if sql is None:
            continue
        analysis = schema.analyse(sql, platforms)
        for problem in analysis.problems:
            where.report(key_node, f"{key}: {problem}")
        statements[key] = sql.strip()
        analyses.append(analysis)
    return (statements, analyses) if "query" in statements else None
