"""The credentials of document-management systems: who may call the adapter, for which
agencies, with which secret.

A credential is an id (``dms-`` and 16 random hex digits, sent in ``X-Backbone-Key``), the
agencies it acts for (exact codes: a DMS serving several agencies has them all), and an
HMAC secret shown once when it is made or rotated. A secret that signs must be readable by
the server, so it cannot be stored hashed as a password is: it is stored encrypted (Fernet:
AES-128-CBC with an HMAC) with the adapter's key, ``BACKBONE_ADAPTER_KEY``, which lives in
the adapter's environment and never in the database. A database copied without that key
gives nobody a usable secret.

Rotation replaces the secret at once (the old one stops working); revocation keeps the row,
so that what a credential did stays attributable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backbone.agency import AgencyCode
from backbone.errors import BackboneError
from backbone.store.models import AdapterCredential, utcnow

KEY_ENV = "BACKBONE_ADAPTER_KEY"
MOST_AGENCIES = 1000  # agencies one credential may act for


class CredentialError(BackboneError):
    """A credential cannot be made, found or used as asked (the message says why)."""


@dataclass(frozen=True)
class Credential:
    """An active credential as a request is checked against it."""

    key_id: str
    agencies: frozenset[str]
    secret: bytes


@dataclass(frozen=True)
class Listed:
    """A credential as ``credentials list`` shows it: never its secret."""

    key_id: str
    agencies: tuple[str, ...]
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class Vault:
    """Encrypts and decrypts secrets with the adapter's key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise CredentialError(
                f"{KEY_ENV} is not a key: make one with `backbone adapter credentials key`"
            ) from exc

    @classmethod
    def from_environment(cls) -> Vault:
        key = os.environ.get(KEY_ENV)
        if not key:
            raise CredentialError(
                f"{KEY_ENV} is not set: the adapter's credentials are encrypted with it "
                "(make one with `backbone adapter credentials key`)"
            )
        return cls(key)

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode("ascii")

    def seal(self, secret: bytes) -> str:
        return self._fernet.encrypt(secret).decode("ascii")

    def open(self, token: str) -> bytes:
        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken as exc:
            raise CredentialError(
                f"a credential's secret cannot be decrypted with this {KEY_ENV} "
                "(another key sealed it)"
            ) from exc


def agencies_of(codes: Sequence[str]) -> tuple[str, ...]:
    """The agencies a credential acts for, validated, in order, without repeats."""
    if not codes:
        raise CredentialError("a credential acts for at least one agency (--agency CODE)")
    if len(codes) > MOST_AGENCIES:
        raise CredentialError(f"a credential acts for at most {MOST_AGENCIES} agencies")
    return tuple(dict.fromkeys(str(AgencyCode.parse(code)) for code in codes))


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


async def add(
    session: AsyncSession, vault: Vault, agencies: Sequence[str], label: str | None = None
) -> tuple[str, str]:
    """A new credential: its id and its secret (shown once)."""
    codes = agencies_of(agencies)
    key_id, secret = f"dms-{secrets.token_hex(8)}", _new_secret()
    session.add(
        AdapterCredential(
            key_id=key_id,
            agencies=",".join(codes),
            secret=vault.seal(secret.encode()),
            label=label[:200] if label else None,
        )
    )
    return key_id, secret


async def rotate(session: AsyncSession, vault: Vault, key_id: str) -> str:
    """A new secret for an active credential (the old one stops working)."""
    row = await _active(session, key_id)
    secret = _new_secret()
    row.secret = vault.seal(secret.encode())
    return secret


async def revoke(session: AsyncSession, key_id: str) -> bool:
    """Revoke it; False if it was revoked already."""
    row = await session.get(AdapterCredential, key_id)
    if row is None:
        raise CredentialError(f"no credential {key_id[:64]!r}")
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


async def listed(session: AsyncSession) -> list[Listed]:
    rows = await session.execute(select(AdapterCredential).order_by(AdapterCredential.created_at))
    return [
        Listed(r.key_id, tuple(r.agencies.split(",")), r.label, r.created_at, r.revoked_at)
        for r in rows.scalars()
    ]


async def active(session: AsyncSession, vault: Vault, key_id: str) -> Credential | None:
    """The active credential with this id, its secret decrypted; None if there is none."""
    row = await session.get(AdapterCredential, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return Credential(row.key_id, frozenset(row.agencies.split(",")), vault.open(row.secret))


async def _active(session: AsyncSession, key_id: str) -> AdapterCredential:
    row = await session.get(AdapterCredential, key_id)
    if row is None:
        raise CredentialError(f"no credential {key_id[:64]!r}")
    if row.revoked_at is not None:
        raise CredentialError(f"credential {key_id} is revoked: add a new one")
    return row
