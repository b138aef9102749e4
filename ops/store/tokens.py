"""API tokens and roles. Only a token's SHA-256 is stored.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> tokens = TokenBook(store)
    >>> secret = tokens.issue("ops-desk", "operator")
    >>> tokens.resolve(secret)
    ('ops-desk', 'operator')
    >>> tokens.resolve("wrong") is None
    True
    >>> tokens.last_used("ops-desk") is not None
    True
    >>> tokens.revoke("ops-desk"), tokens.resolve(secret)
    (1, None)
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, or_, select, update

from citywatch.ops.store.lifecycle import audit
from citywatch.ops.store.schema import ApiTokenRow
from citywatch.ops.store.store import IncidentStore

Role = Literal["viewer", "operator", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "analyst", "admin")
LAST_USED_PRECISION = timedelta(minutes=1)


class TokenNameTaken(ValueError):
    """A valid token with this name exists."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """Issue and resolve API tokens."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def issue(self, name: str, role: Role, *, actor: str = "cli",
              expires_at: datetime | None = None) -> str:
        """Create a token for ``name`` with ``role`` (valid until ``expires_at``, if
        given); the secret is returned only here. A name has one valid token at a time."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            taken = conn.execute(select(ApiTokenRow.name).where(
                ApiTokenRow.name == name, ApiTokenRow.revoked_at.is_(None),
                or_(ApiTokenRow.expires_at.is_(None), ApiTokenRow.expires_at > now))
            ).first()
            if taken is not None:
                raise TokenNameTaken(f"a valid token named '{name}' exists; revoke it first")
            conn.execute(ApiTokenRow.__table__.insert().values(
                token_hash=token_hash(secret), name=name, role=role, created_at=now,
                expires_at=expires_at))
            audit(conn, actor=actor, action="issue", entity_type="token", entity_id=name,
                  detail={"role": role, "expires_at": expires_at.isoformat()
                          if expires_at else None})
        return secret

    def resolve(self, token: str) -> tuple[str, Role] | None:
        """``(name, role)`` of a valid token (known, not revoked, not expired), else
        ``None``. Its ``last_used_at`` is brought up to date (at most once a minute)."""
        digest = token_hash(token)
        with self.store.engine.connect() as conn:
            row = conn.execute(select(ApiTokenRow.name, ApiTokenRow.role,
                                      ApiTokenRow.last_used_at, ApiTokenRow.expires_at,
                                      ApiTokenRow.revoked_at)
                               .where(ApiTokenRow.token_hash == digest)).one_or_none()
        now = datetime.now(UTC)
        if row is None or row.revoked_at is not None or (
                row.expires_at is not None and row.expires_at <= now):
            return None
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_PRECISION:
            with self.store.engine.begin() as conn:
                conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_hash == digest)
                             .values(last_used_at=now))
        return row.name, row.role

    def revoke(self, name: str, *, actor: str = "cli") -> int:
        """Revoke ``name``'s tokens at once; returns how many were valid."""
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            revoked = conn.execute(update(ApiTokenRow).where(
                ApiTokenRow.name == name, ApiTokenRow.revoked_at.is_(None))
                .values(revoked_at=now)).rowcount
            if revoked:
                audit(conn, actor=actor, action="revoke", entity_type="token",
                      entity_id=name, detail={"tokens": revoked})
        return int(revoked or 0)

    def list(self) -> list[Any]:
        """Every token's name, role, created, last used, expiry and revocation (never the
        secret or its hash), oldest first."""
        with self.store.engine.connect() as conn:
            return list(conn.execute(select(
                ApiTokenRow.name, ApiTokenRow.role, ApiTokenRow.created_at,
                ApiTokenRow.last_used_at, ApiTokenRow.expires_at, ApiTokenRow.revoked_at)
                .order_by(ApiTokenRow.created_at)))

    def count(self, role: Role) -> int:
        """How many valid tokens have ``role``."""
        now = datetime.now(UTC)
        with self.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ApiTokenRow).where(
                ApiTokenRow.role == role, ApiTokenRow.revoked_at.is_(None),
                or_(ApiTokenRow.expires_at.is_(None), ApiTokenRow.expires_at > now))
            ).scalar() or 0)

    def last_used(self, name: str) -> datetime | None:
        """When a token of ``name`` was last used (to the minute), if ever."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(func.max(ApiTokenRow.last_used_at))
                                .where(ApiTokenRow.name == name)).scalar()
