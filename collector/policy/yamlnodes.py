"""Reading pack YAML as nodes, so that every problem can name its file and line.

``yaml.compose`` with PyYAML's SafeLoader builds the node tree without constructing any
object (no tags run, nothing executes), and each node keeps the line it started on. Every
value in a pack is a string, a list or a mapping, so the tree is read directly: a scalar is a
string only when YAML resolved it as one, which catches ``version: 1.10`` (the float 1.1) and
``cis_controls_v8: [4.10]`` before they silently become other numbers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass

import yaml

__all__ = ["Where", "mapping", "require", "string", "string_list"]

_STR = "tag:yaml.org,2002:str"


@dataclass
class Where:
    """Where problems go, and how they are prefixed: ``<file>:<line>: <subject>: ...``."""

    file: str
    subject: str
    problems: list[str]

    def report(self, node: yaml.Node, what: str) -> None:
        self.problems.append(f"{self.file}:{node.start_mark.line + 1}: {self.subject}: {what}")


def _in(label: str) -> str:
    return f" in {label}" if label else ""


def mapping(
    node: yaml.Node, where: Where, label: str, allowed: Collection[str]
) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
    """The (key node, value node) pairs of a mapping, by key; unknown and duplicate keys are
    reported and left out. None (reported) when ``node`` is not a mapping."""
    if not isinstance(node, yaml.MappingNode):
        where.report(node, f"{label or 'this'} must be a mapping")
        return None
    found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in node.value:
        if not (isinstance(key, yaml.ScalarNode) and key.tag == _STR):
            where.report(key, f"keys must be strings{_in(label)}")
        elif key.value in found:
            where.report(key, f"duplicate key '{key.value}'{_in(label)}")
        elif key.value not in allowed:
            close = difflib.get_close_matches(key.value, list(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where.report(key, f"unknown key '{key.value}'{_in(label)}{hint}")
        else:
            found[key.value] = (key, value)
    return found


def require(
    node: yaml.Node,
    found: dict[str, tuple[yaml.Node, yaml.Node]],
    where: Where,
    label: str,
    required: Collection[str],
) -> None:
    """Report each key of ``required`` that ``found`` lacks, at the mapping's first line."""
    for key in required:
        if key not in found:
            where.report(node, f"missing required key '{key}'{_in(label)}")


def string(node: yaml.Node, where: Where, label: str) -> str | None:
    """A non-empty string scalar, or None (reported)."""
    if not (isinstance(node, yaml.ScalarNode) and node.tag == _STR):
        hint = ""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith((":int", ":float", ":bool")):
            hint = " (quote it: YAML reads 1.10 as the number 1.1)"
        where.report(node, f"{label} must be a string{hint}")
        return None
    if not node.value.strip():
        where.report(node, f"{label} must not be empty")
        return None
    return str(node.value)


def string_list(
    node: yaml.Node, where: Where, label: str, pattern: re.Pattern[str] | None, kind: str = ""
) -> tuple[str, ...] | None:
    """A non-empty list of strings, each matching ``pattern`` (described by ``kind``),
    without repeats; None when anything is wrong (reported)."""
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        where.report(node, f"{label} must be a non-empty list")
        return None
    values: list[str] = []
    ok = True
    for item in node.value:
        value = string(item, where, f"{label} items")
        if value is None:
            ok = False
        elif pattern is not None and not pattern.fullmatch(value):
            where.report(item, f"{label}: '{value}' is not {kind}")
            ok = False
        elif value in values:
            where.report(item, f"{label}: '{value}' is listed twice")
            ok = False
        else:
            values.append(value)
    return tuple(values) if ok else None
