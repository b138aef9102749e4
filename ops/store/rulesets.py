"""Governance of rule sets: self-contained versions applied (validated, stored, audited),
and the version in force read back by any worker.

A version is the rule file's text **plus the content of every zone and site layer file
it uses**, stored by content hash; its version id is
:attr:`~citywatch.rules.model.RuleSet.version`, a hash over both. A worker on another
host (or after the files moved) writes the layer files it needs from the store into its
own cache folder and loads the version from there (:meth:`RuleSetBook.materialise`).

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> book = RuleSetBook(store)
    >>> book.current() is None
    True
    >>> from citywatch.ops.settings import DEMO_DIR
    >>> old, new = book.apply(DEMO_DIR / "rules.yaml", actor="ana")
    >>> book.current().version == new, len(book.current().layers)
    (True, 2)
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from citywatch.ops.store.lifecycle import audit
from citywatch.ops.store.schema import (
    RuleLayerFileRow,
    RuleSetRow,
    RuleVersionRow,
    WorkerHeartbeatRow,
)
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import layer_digests, load_ruleset, parse_ruleset
from citywatch.rules.model import RuleSet


@dataclass(frozen=True)
class LayerFile:
    """One layer file of a version: which kind and layer, its file name and hash."""

    kind: str  # "zones" or "sites"
    layer: str
    name: str
    sha256: str


@dataclass(frozen=True)
class AppliedRuleSet:
    """A version as applied: its text, its layer files, who applied it and when."""

    version: str
    content: str
    base_dir: Path
    applied_by: str
    applied_at: datetime
    layers: tuple[LayerFile, ...] = field(default=())


@dataclass(frozen=True)
class Proposal:
    """A candidate version waiting for (or after) a second person's decision."""

    version: str
    content: str
    base_dir: Path
    layers: tuple[LayerFile, ...]
    status: str
    findings: list[str]
    based_on: str | None
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None


def _proposal(row: Any) -> Proposal:
    return Proposal(row.version, row.content, Path(row.base_dir),
                    tuple(LayerFile(**layer) for layer in row.layers), row.status,
                    list(row.findings), row.based_on, row.proposed_by, row.proposed_at,
                    row.decided_by, row.decided_at, row.reason)


class UnknownVersion(LookupError):
    """No such rule-set version (or proposal)."""


class DecisionRefused(PermissionError):
    """A decision the rules forbid: the proposer deciding, or deciding twice."""


class UnloadableRuleSet(ValueError):
    """A stored version this worker cannot load (a layer file missing from the store, a
    layer that no longer reads, a rule the engine refuses)."""


class RuleSetBook:
    """The history of applied rule sets, newest last."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def _applied(self, row: Any) -> AppliedRuleSet:
        return AppliedRuleSet(row.version, row.content, Path(row.base_dir), row.applied_by,
                              row.applied_at, tuple(LayerFile(**layer)
                                                    for layer in (row.layers or [])))

    def current(self) -> AppliedRuleSet | None:
        """The version in force (the last applied), or None."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(RuleSetRow).order_by(RuleSetRow.id.desc()).limit(1)
                               ).one_or_none()
        return self._applied(row) if row is not None else None

    def heartbeat(self, worker: str, version: str, problem: str | None) -> None:
        """Record that ``worker`` evaluates ``version`` (``problem``: why not the one in
        force)."""
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            updated = conn.execute(update(WorkerHeartbeatRow).where(
                WorkerHeartbeatRow.worker == worker).values(
                rules_version=version, rules_problem=problem, seen_at=now)).rowcount
            if not updated:
                conn.execute(self.store.insert_ignoring_duplicates(
                    WorkerHeartbeatRow, ["worker"]).values(
                    worker=worker, rules_version=version, rules_problem=problem,
                    seen_at=now))

    def workers(self, seen_within: timedelta) -> list[Any]:
        """Workers heard from within ``seen_within``, by name."""
        since = datetime.now(UTC) - seen_within
        with self.store.engine.connect() as conn:
            return list(conn.execute(select(WorkerHeartbeatRow).where(
                WorkerHeartbeatRow.seen_at >= since).order_by(WorkerHeartbeatRow.worker)))

    def history(self) -> list[AppliedRuleSet]:
        """Every apply, newest first."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(RuleSetRow).order_by(RuleSetRow.id.desc())).all()
        return [self._applied(row) for row in rows]

    def apply(self, path: Path, *, actor: str, previous: str | None = None) -> tuple[str, str]:
        """Bundle the rule file with its layer files, check the bundle loads from the
        store alone, store it and make it live at once, audited old → new (raises
        ``RuleSetError`` for an invalid file, :class:`UnloadableRuleSet` for one that does
        not load). Single-person: see :meth:`propose` / :meth:`approve` for two.

        Returns ``(old_version, new_version)``; ``previous`` names the version in force
        when none was applied before (the worker's configured file).
        """
        bundle = _bundle(path)
        with self.store.engine.begin() as conn:
            _store_files(self.store, conn, bundle.files)
            old = self._make_live(conn, bundle.version, bundle.content,
                                  str(path.resolve().parent), bundle.layers, actor=actor,
                                  action="apply", previous=previous,
                                  detail={"file": str(path),
                                          "rules": bundle.rule_versions,
                                          "layers": bundle.layer_hashes})
        return old, bundle.version

    def _make_live(self, conn: Any, version: str, content: str, base_dir: str,
                   layers: list[dict[str, str]], *, actor: str, action: str,
                   previous: str | None = None, detail: dict[str, Any] | None = None) -> str:
        current = conn.execute(select(RuleSetRow.version).order_by(RuleSetRow.id.desc())
                               .limit(1)).scalar()
        old = current or previous or "-"
        conn.execute(insert(RuleSetRow).values(
            version=version, content=content, base_dir=base_dir, applied_by=actor,
            applied_at=datetime.now(UTC), layers=layers))
        audit(conn, actor=actor, action=action, entity_type="rule_set", entity_id=version,
              detail={"from": old, "to": version, **(detail or {})})
        return old

    def propose(self, path: Path, *, actor: str, findings: list[str] | None = None,
                ) -> Proposal:
        """Store the rule file (with its layers) as a candidate version, with its
        validation ``findings`` (warnings) and what it changes against the live version.
        Proposing the same bundle again returns the pending proposal."""
        bundle = _bundle(path)
        live = self.current()
        with self.store.engine.begin() as conn:
            existing = conn.execute(select(RuleVersionRow).where(
                RuleVersionRow.version == bundle.version)).one_or_none()
            if existing is not None and existing.status == "proposed":
                return _proposal(existing)
            _store_files(self.store, conn, bundle.files)
            row = {"content": bundle.content, "base_dir": str(path.resolve().parent),
                   "layers": bundle.layers, "status": "proposed",
                   "findings": list(findings or []),
                   "based_on": live.version if live else None, "proposed_by": actor,
                   "proposed_at": datetime.now(UTC), "decided_by": None,
                   "decided_at": None, "reason": None}
            if existing is None:
                conn.execute(insert(RuleVersionRow).values(version=bundle.version, **row))
            else:  # rejected before: proposed again
                conn.execute(update(RuleVersionRow).where(
                    RuleVersionRow.version == bundle.version).values(**row))
            audit(conn, actor=actor, action="propose", entity_type="rule_set",
                  entity_id=bundle.version,
                  detail={"based_on": row["based_on"], "file": str(path),
                          "rules": bundle.rule_versions, "layers": bundle.layer_hashes,
                          "findings": row["findings"]})
            found = conn.execute(select(RuleVersionRow).where(
                RuleVersionRow.version == bundle.version)).one()
        return _proposal(found)

    def proposal(self, version: str) -> Proposal | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(RuleVersionRow).where(
                RuleVersionRow.version == version)).one_or_none()
        return _proposal(row) if row is not None else None

    def proposals(self, status: str | None = None) -> list[Proposal]:
        """Proposals, newest first (``status``: proposed, approved or rejected)."""
        query = select(RuleVersionRow).order_by(RuleVersionRow.proposed_at.desc())
        if status is not None:
            query = query.where(RuleVersionRow.status == status)
        with self.store.engine.connect() as conn:
            return [_proposal(row) for row in conn.execute(query).all()]

    def _pending(self, conn: Any, version: str, actor: str) -> Any:
        row = conn.execute(select(RuleVersionRow).where(RuleVersionRow.version == version)
                           .with_for_update()).one_or_none()
        if row is None:
            raise UnknownVersion(f"no proposed rule set {version}")
        if row.status != "proposed":
            raise DecisionRefused(f"rule set {version} was already {row.status} by "
                                  f"{row.decided_by}")
        if row.proposed_by == actor:
            raise DecisionRefused(f"{actor} proposed rule set {version}: a different "
                                  "person must decide on it")
        return row

    def approve(self, version: str, *, actor: str) -> tuple[str, str]:
        """Make a proposed version live; ``actor`` must not be its proposer. Returns
        ``(old_version, new_version)``."""
        with self.store.engine.begin() as conn:
            row = self._pending(conn, version, actor)
            conn.execute(update(RuleVersionRow).where(RuleVersionRow.version == version)
                         .values(status="approved", decided_by=actor,
                                 decided_at=datetime.now(UTC)))
            old = self._make_live(conn, version, row.content, row.base_dir, row.layers,
                                  actor=actor, action="approve",
                                  detail={"proposed_by": row.proposed_by,
                                          "proposed_at": row.proposed_at.isoformat()})
        return old, version

    def reject(self, version: str, *, actor: str, reason: str) -> None:
        """Refuse a proposed version with ``reason``; ``actor`` must not be its proposer."""
        with self.store.engine.begin() as conn:
            self._pending(conn, version, actor)
            conn.execute(update(RuleVersionRow).where(RuleVersionRow.version == version)
                         .values(status="rejected", decided_by=actor,
                                 decided_at=datetime.now(UTC), reason=reason))
            audit(conn, actor=actor, action="reject", entity_type="rule_set",
                  entity_id=version, detail={"reason": reason})

    def rollback(self, version: str, *, actor: str) -> tuple[str, str]:
        """Make a version that was live before live again (an audited apply)."""
        earlier = next((a for a in self.history() if a.version == version), None)
        if earlier is None:
            raise UnknownVersion(f"rule set {version} was never live")
        with self.store.engine.begin() as conn:
            old = self._make_live(conn, version, earlier.content, str(earlier.base_dir),
                                  [layer.__dict__ for layer in earlier.layers],
                                  actor=actor, action="rollback")
        return old, version

    def version(self, version: str) -> AppliedRuleSet | None:
        """A version that was live or proposed, as stored."""
        live = next((a for a in self.history() if a.version == version), None)
        if live is not None:
            return live
        found = self.proposal(version)
        if found is None:
            return None
        return AppliedRuleSet(found.version, found.content, found.base_dir,
                              found.proposed_by, found.proposed_at, found.layers)

    def layer_bytes(self, sha256: str) -> bytes:
        """A stored layer file's content."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(RuleLayerFileRow.data).where(
                RuleLayerFileRow.sha256 == sha256)).scalar_one()

    def materialise(self, applied: AppliedRuleSet, cache_dir: Path) -> RuleSet:
        """The version's rule set, its layer files written from the store into
        ``cache_dir``; raises :class:`UnloadableRuleSet` when that cannot be done. Rule
        sets applied before versions were self-contained load from their ``base_dir``."""
        if not applied.layers:
            return parse_ruleset(applied.content,
                                 applied.base_dir / f"rules@{applied.version}.yaml")
        wanted = {layer.sha256 for layer in applied.layers}
        with self.store.engine.connect() as conn:
            found = dict(conn.execute(select(RuleLayerFileRow.sha256, RuleLayerFileRow.data)
                                      .where(RuleLayerFileRow.sha256.in_(wanted))).all())
        missing = sorted(f"{layer.kind}:{layer.layer}" for layer in applied.layers
                         if layer.sha256 not in found)
        if missing:
            raise UnloadableRuleSet(f"rule set {applied.version}: layer file(s) missing from "
                                    f"the store: {', '.join(missing)}")
        return _materialised(applied.content, applied.layers, found,
                             cache_dir / applied.version)


@dataclass(frozen=True)
class _Bundle:
    ruleset: RuleSet
    content: str
    files: list[tuple[LayerFile, bytes]]
    version: str

    @property
    def layers(self) -> list[dict[str, str]]:
        return [layer.__dict__ for layer, _ in self.files]

    @property
    def layer_hashes(self) -> dict[str, str]:
        return {f"{layer.kind}:{layer.layer}": layer.sha256 for layer, _ in self.files}

    @property
    def rule_versions(self) -> dict[str, str]:
        return {rule.id: rule.version for rule in self.ruleset.rules}


def _bundle(path: Path) -> _Bundle:
    """The rule file and its layer files, checked to load from copies alone."""
    ruleset = load_ruleset(path)  # every error as FILE:LINE:COL
    content = path.read_text(encoding="utf-8")
    files = _layer_files(ruleset)
    with tempfile.TemporaryDirectory(prefix="citywatch-rules-") as scratch:
        loaded = _materialised(content, [layer for layer, _ in files],
                               {layer.sha256: data for layer, data in files}, Path(scratch))
        _check_loads(loaded)
    return _Bundle(ruleset, content, files, loaded.version)


def _store_files(store: IncidentStore, conn: Any, files: list[tuple[LayerFile, bytes]],
                 ) -> None:
    if files:
        conn.execute(store.insert_ignoring_duplicates(RuleLayerFileRow, ["sha256"]),
                     [{"sha256": layer.sha256, "name": layer.name, "data": data}
                      for layer, data in files])


def approval_required(policy: str, admins: int) -> bool:
    """Whether a rule change needs a second person: ``policy`` is ``required``, ``off``
    or ``auto`` (required once the store has more than one admin)."""
    return policy == "required" or (policy == "auto" and admins > 1)


def diff_versions(old: AppliedRuleSet | None, new: AppliedRuleSet) -> dict[str, Any]:
    """What ``new`` changes against ``old``: rules added, removed and changed (with the
    fields that differ), and layers whose files were added, removed or changed.

    Example:
        >>> from citywatch.ops.settings import DEMO_DIR
        >>> text = (DEMO_DIR / "rules.yaml").read_text()
        >>> a = AppliedRuleSet("a", text, DEMO_DIR, "ana", datetime.now(UTC))
        >>> b = AppliedRuleSet("b", text.replace("value: 4.5", "value: 5.0"), DEMO_DIR,
        ...                    "bob", datetime.now(UTC))
        >>> diff_versions(a, b)["changed"]
        {'quake-m45': ['condition']}
    """
    def rules_of(version: AppliedRuleSet | None) -> dict[str, dict[str, Any]]:
        if version is None:
            return {}
        parsed = parse_ruleset(version.content, version.base_dir / "rules.yaml")
        return {rule.id: rule.model_dump(mode="json") for rule in parsed.rules}

    def layers_of(version: AppliedRuleSet | None) -> dict[str, str]:
        return {f"{layer.kind}:{layer.layer}": layer.sha256
                for layer in (version.layers if version else ())}

    before, after = rules_of(old), rules_of(new)
    changed = {rule_id: sorted(k for k in after[rule_id]
                               if after[rule_id].get(k) != before[rule_id].get(k))
               for rule_id in sorted(before.keys() & after.keys())
               if before[rule_id] != after[rule_id]}
    old_layers, new_layers = layers_of(old), layers_of(new)
    return {"from": old.version if old else None, "to": new.version,
            "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()), "changed": changed,
            "layers_added": sorted(new_layers.keys() - old_layers.keys()),
            "layers_removed": sorted(old_layers.keys() - new_layers.keys()),
            "layers_changed": sorted(k for k in old_layers.keys() & new_layers.keys()
                                     if old_layers[k] != new_layers[k])}


def _layer_files(ruleset: RuleSet) -> list[tuple[LayerFile, bytes]]:
    files = []
    for kind, specs in (("zones", ruleset.zones), ("sites", ruleset.sites)):
        for spec in specs:
            data = spec.path.read_bytes()
            files.append((LayerFile(kind, spec.layer, spec.path.name,
                                    hashlib.sha256(data).hexdigest()), data))
    return files


def _materialised(content: str, layers: Any, data: dict[str, bytes], folder: Path) -> RuleSet:
    """Parse ``content`` with its layers read from copies written into ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[tuple[str, str], Path] = {}
        for layer in layers:
            target = folder / layer.sha256[:16] / layer.name
            if not target.exists():
                target.parent.mkdir(exist_ok=True)
                target.write_bytes(data[layer.sha256])
            paths[(layer.kind, layer.layer)] = target
        ruleset = parse_ruleset(content, folder / "rules.yaml")
        zones = [z.model_copy(update={"path": paths.get(("zones", z.layer), z.path)})
                 for z in ruleset.zones]
        sites = [s.model_copy(update={"path": paths.get(("sites", s.layer), s.path)})
                 for s in ruleset.sites]
        resolved = ruleset.model_copy(update={"zones": zones, "sites": sites})
    except (OSError, ValueError) as exc:
        raise UnloadableRuleSet(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return resolved.with_layer_digests(layer_digests(resolved))


def _check_loads(ruleset: RuleSet) -> None:
    """Build an engine over ``ruleset`` (loads every layer), or raise UnloadableRuleSet."""
    try:
        RuleEngine.from_ruleset(ruleset)
    except Exception as exc:  # any failure here is a version workers could not run
        raise UnloadableRuleSet(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
