"""The collection plan as the agent follows it: which tables, which paths, which columns.

The collector derives plans from the enabled policy packs and pushes them; without a
collector (``posture-agent facts``) the agent derives the same plan from ``policies/``
itself, or reads one from a JSON file in the collector's ``CollectionPlan.to_dict()`` form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sources.base import TableRequest

__all__ = ["CollectionPlan", "PlanError", "load_plan", "plan_from_packs"]

DEFAULT_INTERVAL_SECONDS = 300


class PlanError(Exception):
    """A plan file or policy directory could not be turned into a plan."""


@dataclass(frozen=True)
class CollectionPlan:
    version: str
    interval_seconds: int
    tables: tuple[TableRequest, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectionPlan:
        try:
            tables = tuple(
                TableRequest(
                    name=str(table["name"]),
                    paths=tuple(str(path) for path in table.get("paths", ())),
                    columns=tuple(str(column) for column in table.get("columns", ())),
                )
                for table in data["tables"]
            )
            interval = int(data.get("interval_seconds", DEFAULT_INTERVAL_SECONDS))
        except (KeyError, TypeError, ValueError) as error:
            raise PlanError(f"not a collection plan: {error!r}") from error
        if interval < 1:
            raise PlanError(f"interval_seconds must be at least 1, not {interval}")
        return cls(str(data.get("version", "")), interval, tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "interval_seconds": self.interval_seconds,
            "tables": [
                {"name": t.name, "paths": list(t.paths), "columns": list(t.columns)}
                for t in self.tables
            ],
        }


def load_plan(path: Path) -> CollectionPlan:
    try:
        return CollectionPlan.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise PlanError(f"cannot read plan {path}: {error}") from error


def plan_from_packs(policies: Path, platform: str) -> CollectionPlan:
    """The plan the collector would send, derived locally from the packs in ``policies``."""
    try:
        from collector.policy.loader import PolicyError, load_packs
        from collector.policy.plan import collection_plan
    except ImportError as error:  # the agent extra alone lacks the policy loader's deps
        raise PlanError(f"deriving a plan from packs needs pyyaml: {error}; use --plan") from error
    try:
        packs = load_packs(policies)
    except PolicyError as error:
        raise PlanError(f"policy packs in {policies} are invalid:\n{error}") from error
    return CollectionPlan.from_dict(collection_plan(packs, platform).to_dict())
