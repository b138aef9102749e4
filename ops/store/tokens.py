"""API tokens and roles. Only a token's SHA-256 is stored.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> tokens = TokenBook(store)
    >>> secret = tokens.issue("ops-desk", "operator")
    >>> tokens.resolve(secret)
    ('ops-desk', 'operator')
    >>> tokens.resolve("wrong") is None
    True
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select

from citywatch.ops.store.lifecycle import audit
from citywatch.ops.store.schema import ApiTokenRow
from citywatch.ops.store.store import IncidentStore

Role = Literal["viewer", "operator", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "analyst", "admin")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """Issue and resolve API tokens."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def issue(self, name: str, role: Role, *, actor: str = "cli") -> str:
        """Create a token for ``name`` with ``role``; the secret is returned only here."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        secret = secrets.token_urlsafe(32)
        with self.store.engine.begin() as conn:
            conn.execute(ApiTokenRow.__table__.insert().values(
                token_hash=token_hash(secret), name=name, role=role,
                created_at=datetime.now(UTC)))
            audit(conn, actor=actor, action="issue", entity_type="token", entity_id=name,
                  detail={"role": role})
        return secret

    def resolve(self, token: str) -> tuple[str, Role] | None:
        """``(name, role)`` of a valid token, else ``None``."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(ApiTokenRow.name, ApiTokenRow.role)
                               .where(ApiTokenRow.token_hash == token_hash(token))).one_or_none()
        return (row.name, row.role) if row is not None else None
