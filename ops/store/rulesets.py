"""Governance of rule sets: apply (validate, store, audit), and read the current one.

Workers pick up a newly applied rule set without a restart (see ``streams/worker.py``).

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> book = RuleSetBook(store)
    >>> book.current() is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from citywatch.ops.store.lifecycle import audit
from citywatch.ops.store.schema import RuleSetRow
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.loader import load_ruleset, parse_ruleset
from citywatch.rules.model import RuleSet


@dataclass(frozen=True)
class AppliedRuleSet:
    version: str
    content: str
    base_dir: Path
    applied_by: str
    applied_at: datetime

    def parse(self) -> RuleSet:
        return parse_ruleset(self.content, self.base_dir / f"rules@{self.version}.yaml")


class RuleSetBook:
    """The history of applied rule sets, newest last."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def current(self) -> AppliedRuleSet | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(RuleSetRow).order_by(RuleSetRow.id.desc()).limit(1)
                               ).one_or_none()
        if row is None:
            return None
        return AppliedRuleSet(row.version, row.content, Path(row.base_dir), row.applied_by,
                              row.applied_at)

    def apply(self, path: Path, *, actor: str, previous: str | None = None) -> tuple[str, str]:
        """Validate the rule file (raises ``RuleSetError``), store it, audit old → new.

        Returns ``(old_version, new_version)``; ``previous`` names the version in force
        when none was applied before (the worker's configured file).
        """
        ruleset = load_ruleset(path)  # every error as FILE:LINE:COL
        current = self.current()
        old = current.version if current else (previous or "-")
        new = ruleset.version
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            conn.execute(insert(RuleSetRow).values(
                version=new, content=path.read_text(encoding="utf-8"),
                base_dir=str(path.resolve().parent), applied_by=actor, applied_at=now))
            audit(conn, actor=actor, action="apply", entity_type="rule_set", entity_id=new,
                  detail={"from": old, "to": new, "file": str(path),
                          "rules": {r.id: r.version for r in ruleset.rules}})
        return old, new
