"""Broker users for principals, through the management API: create, keep in step with
their grant, rotate, revoke.

Idempotent: ``ensure`` on a user whose password, tags and permissions already match
changes nothing on the broker (a given password is compared with the stored salted hash,
never reset for nothing). Users are global in RabbitMQ but permissions belong to a virtual
host; ``revoke`` removes the backbone's virtual host from a user and deletes the user only
when no other virtual host still grants it anything.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import BackboneError
from .access import Grant
from .mgmt import Management, user_tags


def vhost_url(base: str, vhost: str, user: str, password: str) -> str:
    """The broker of ``base`` (an AMQP URL) as ``user`` in ``vhost``: what a provisioned
    principal connects with."""
    parts = urlsplit(base)
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    netloc = f"{credentials}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(vhost, safe=""), "", ""))


CLOSE_WAIT = 10.0  # seconds to wait for the management API to learn of a new connection
SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"


class ProvisioningError(BackboneError):
    """A principal cannot be provisioned as asked (a reserved name, for one)."""


def new_password() -> str:
    """A password for a machine principal: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def password_matches(user: dict[str, object], password: str) -> bool:
    """Does ``password`` match the salted hash the broker stores (RabbitMQ's scheme: base64
    of a 4-byte salt followed by hash(salt + password))?"""
    algorithm = user.get("hashing_algorithm")
    digest = {SHA256: hashlib.sha256, SHA512: hashlib.sha512}.get(str(algorithm))
    try:
        stored = base64.b64decode(str(user.get("password_hash") or ""), validate=True)
    except ValueError:
        return False
    if digest is None or len(stored) < 5:
        return False
    salt = stored[:4]
    return secrets.compare_digest(stored[4:], digest(salt + password.encode()).digest())


@dataclass(frozen=True)
class Provisioned:
    """What ``ensure`` did. ``password`` is set when a new one was made here (to be shown
    once); ``changes`` is empty when the broker already matched."""

    username: str
    created: bool
    password: str | None
    changes: tuple[str, ...]
    closed_connections: int = 0


@dataclass(frozen=True)
class Revoked:
    username: str
    user_deleted: bool
    closed_connections: int


@dataclass(frozen=True)
class Provisioner:
    """Applies grants on one virtual host."""

    mgmt: Management
    vhost: str

    def ensure(
        self,
        username: str,
        grant: Grant,
        *,
        password: str | None = None,
        rotate: bool = False,
    ) -> Provisioned:
        """Make ``username`` exist with ``grant``. A new user gets ``password`` or a
        generated one; an existing user keeps its password unless ``rotate`` (a new
        generated one, or ``password``) or a different ``password`` is given. Setting a
        password closes the user's open connections: who holds the old one is out."""
        if username == self.mgmt.username:
            raise ProvisioningError(
                f"{username!r} is the administrator the management API is called as; "
                "a principal needs a user of its own"
            )
        user = self.mgmt.user(username)
        tags = ",".join(grant.tags)
        changes: list[str] = []
        made: str | None = None
        closed = 0
        if user is None:
            made = password if password is not None else new_password()
            self.mgmt.add_user(username, made, tags)
            changes.append("user created")
        elif rotate or (password is not None and not password_matches(user, password)):
            made = password if password is not None else new_password()
            self.mgmt.add_user(username, made, tags)
            changes.append("password set")
            closed = self.close_connections(username, "password changed")
        elif set(user_tags(user)) != set(grant.tags):
            self.mgmt.set_tags(username, user, tags)
            changes.append(f"tags set to {tags or 'none'}")
        # routing keys before permissions: without a topic permission any key is admitted
        have = {
            t["exchange"]: (t.get("write", ""), t.get("read", ""))
            for t in self.mgmt.topic_permissions(self.vhost, username)
        }
        wanted = {exchange: (keys, "") for exchange, keys in grant.topic.items()}
        if have != wanted:
            if set(have) - set(wanted):
                self.mgmt.delete_topic_permissions(self.vhost, username)
            for exchange, (keys, _) in wanted.items():
                self.mgmt.set_topic_permissions(self.vhost, username, exchange, write=keys)
            changes.append("routing keys set")
        if self.mgmt.permissions(self.vhost, username) != {
            "user": username,
            "vhost": self.vhost,
            **grant.permissions(),
        }:
            self.mgmt.set_permissions(self.vhost, username, **grant.permissions())
            changes.append("permissions set")
        if user is not None and changes and not closed:
            # channels opened under the old rights keep them: those connections must go
            closed = self.close_connections(username, "access changed")
        changes += self._limit(username, grant)  # counts new connections: none to close
        return Provisioned(
            username,
            created=user is None,
            password=made if password is None else None,
            changes=tuple(changes),
            closed_connections=closed,
        )

    def _limit(self, username: str, grant: Grant) -> list[str]:
        """Set the grant's user limits (and clear those it does not have). They count
        new connections and channels: open ones above a lowered limit stay."""
        wanted = grant.limits.as_broker() if grant.limits else {}
        have = self.mgmt.user_limits(username)
        if have == wanted:
            return []
        for name, value in wanted.items():
            if have.get(name) != value:
                self.mgmt.set_user_limit(username, name, value)
        for name in set(have) - set(wanted):
            self.mgmt.clear_user_limit(username, name)
        shown = ", ".join(f"{k} {v}" for k, v in wanted.items()) or "none"
        return [f"limits set ({shown})"]

    def revoke(self, username: str) -> Revoked:
        """Take the backbone's virtual host from ``username`` and close its connections
        there; delete the user if it has no other virtual host. The inbox and what waits
        in it are kept."""
        if username == self.mgmt.username:
            raise ProvisioningError(f"{username!r} is the administrator; it is not revoked")
        open_before = self._connections(username)  # deleting a user may close them itself
        self.mgmt.delete_permissions(self.vhost, username)  # first: then nothing is admitted
        self.mgmt.delete_topic_permissions(self.vhost, username)
        elsewhere = [p for p in self.mgmt.user_permissions(username) if p["vhost"] != self.vhost]
        deleted = False
        if not elsewhere and self.mgmt.user(username) is not None:
            self.mgmt.delete_user(username)
            deleted = True
        closed = self.close_connections(
            username, "access revoked by the backbone's operators", also=open_before
        )
        return Revoked(username, deleted, closed)

    def close_connections(self, username: str, reason: str, also: Iterable[str] = ()) -> int:
        """Close the user's connections to this virtual host (and the named ones, if still
        open); how many there were."""
        connections = self.mgmt.connections(username)
        names = set(also) | {str(c["name"]) for c in connections if c.get("vhost") == self.vhost}
        if not names:
            return 0
        if all(c.get("vhost") == self.vhost for c in connections):
            self.mgmt.close_user_connections(username, reason)  # at once, by name of user
            return len(names)
        deadline = time.monotonic() + CLOSE_WAIT
        pending = set(names)
        while pending and time.monotonic() < deadline:  # one at a time, once the API knows them
            pending = {n for n in pending if not self.mgmt.close_connection(n, reason)}
            open_now = {str(c["name"]) for c in self.mgmt.connections(username)}
            pending &= open_now
            if pending:
                time.sleep(0.5)
        return len(names)

    def _connections(self, username: str) -> set[str]:
        return {
            str(c["name"]) for c in self.mgmt.connections(username) if c.get("vhost") == self.vhost
        }
