"""A small client of the RabbitMQ management HTTP API: virtual hosts, users, permissions,
connections, definitions.

Provisioning (``backbone.broker.provisioning``), ``backbone access check`` and ``backbone topology
export`` go through it; the tests use it to give each test its own virtual host. It speaks
the API of RabbitMQ 3.9 and later (user tags as a list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from ..errors import BackboneError


class ManagementError(BackboneError):
    """The management API refused a request or could not be reached."""


def _q(name: str) -> str:
    return quote(name, safe="")


@dataclass(frozen=True)
class Management:
    """``url`` is ``http://user:password@host:port/`` (credentials in the URL)."""

    url: str
    timeout: float = 10.0

    @property
    def username(self) -> str:
        """The user the API is called as (the administrator who provisions)."""
        return unquote(urlsplit(self.url).username or "guest")

    @property
    def password(self) -> str:
        return unquote(urlsplit(self.url).password or "guest")

    def _client(self) -> httpx.Client:
        parts = urlsplit(self.url)
        base = (
            f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}/api"
        )
        return httpx.Client(
            base_url=base, auth=(self.username, self.password), timeout=self.timeout
        )

    def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        missing_ok: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded answer; None for an empty one. With ``missing_ok``, a 404 is None
        for a GET and 404 otherwise (nothing to change)."""
        try:
            with self._client() as client:
                response = client.request(method, path, json=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            why = re.sub(r"\[Errno -?\d+\] ", "", str(exc)) or type(exc).__name__
            raise ManagementError(
                f"cannot reach the RabbitMQ management API at {_safe(self.url)}: {why}"
            ) from None
        if response.status_code == 404 and missing_ok:
            return None if method == "GET" else 404
        if response.status_code == 401:
            raise ManagementError(
                f"the management API at {_safe(self.url)} refused user {self.username!r}: "
                "BACKBONE_MGMT_URL must name an administrator"
            )
        if response.status_code >= 400:
            raise ManagementError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        try:
            return response.json() if response.content else None
        except ValueError:
            raise ManagementError(
                f"{method} {path}: not the RabbitMQ management API at {_safe(self.url)} "
                f"(it answered {response.text[:100]!r})"
            ) from None

    # --- virtual hosts ----------------------------------------------------------------------

    def add_vhost(self, vhost: str) -> None:
        self._call("PUT", f"/vhosts/{_q(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        self._call("DELETE", f"/vhosts/{_q(vhost)}")

    # --- users and permissions --------------------------------------------------------------

    def user(self, name: str) -> dict[str, Any] | None:
        """``name``, ``password_hash``, ``hashing_algorithm``, ``tags``; None if absent."""
        result = self._call("GET", f"/users/{_q(name)}", missing_ok=True)
        return dict(result) if result is not None else None

    def add_user(self, name: str, password: str, tags: str = "") -> None:
        """Create the user, or set its password and tags."""
        self._call("PUT", f"/users/{_q(name)}", {"password": password, "tags": tags})

    def set_tags(self, name: str, user: dict[str, Any], tags: str) -> None:
        """Change a user's tags, keeping its password (its hash, and how it was hashed)."""
        body = {
            "password_hash": user.get("password_hash", ""),
            "hashing_algorithm": user.get("hashing_algorithm"),
            "tags": tags,
        }
        self._call("PUT", f"/users/{_q(name)}", {k: v for k, v in body.items() if v is not None})

    def delete_user(self, name: str) -> None:
        self._call("DELETE", f"/users/{_q(name)}", missing_ok=True)

    def permissions(self, vhost: str, user: str) -> dict[str, str] | None:
        """``configure``, ``write``, ``read`` patterns of ``user`` on ``vhost``, or None."""
        result = self._call("GET", f"/permissions/{_q(vhost)}/{_q(user)}", missing_ok=True)
        return dict(result) if result is not None else None

    def user_permissions(self, user: str) -> list[dict[str, str]]:
        """Its permissions on every virtual host."""
        return list(self._call("GET", f"/users/{_q(user)}/permissions", missing_ok=True) or [])

    def set_permissions(
        self, vhost: str, user: str, *, configure: str = "", write: str = "", read: str = ""
    ) -> None:
        self._call(
            "PUT",
            f"/permissions/{_q(vhost)}/{_q(user)}",
            {"configure": configure, "write": write, "read": read},
        )

    def delete_permissions(self, vhost: str, user: str) -> None:
        self._call("DELETE", f"/permissions/{_q(vhost)}/{_q(user)}", missing_ok=True)

    def topic_permissions(self, vhost: str, user: str) -> list[dict[str, str]]:
        """One entry per exchange: ``exchange``, ``write``, ``read``."""
        path = f"/topic-permissions/{_q(vhost)}/{_q(user)}"
        return list(self._call("GET", path, missing_ok=True) or [])

    def set_topic_permissions(
        self, vhost: str, user: str, exchange: str, *, write: str, read: str = ""
    ) -> None:
        self._call(
            "PUT",
            f"/topic-permissions/{_q(vhost)}/{_q(user)}",
            {"exchange": exchange, "write": write, "read": read},
        )

    def delete_topic_permissions(self, vhost: str, user: str) -> None:
        self._call("DELETE", f"/topic-permissions/{_q(vhost)}/{_q(user)}", missing_ok=True)

    def user_limits(self, name: str) -> dict[str, int]:
        """``max-connections`` and ``max-channels`` of a user, those that are set."""
        answer = self._call("GET", f"/user-limits/{_q(name)}", missing_ok=True) or []
        return {str(k): int(v) for entry in answer for k, v in entry.get("value", {}).items()}

    def set_user_limit(self, name: str, limit: str, value: int) -> None:
        self._call("PUT", f"/user-limits/{_q(name)}/{_q(limit)}", {"value": value})

    def clear_user_limit(self, name: str, limit: str) -> None:
        self._call("DELETE", f"/user-limits/{_q(name)}/{_q(limit)}", missing_ok=True)

    # --- connections ------------------------------------------------------------------------

    def connections(self, user: str) -> list[dict[str, Any]]:
        """The user's open AMQP connections (``name``, ``vhost``, ``peer_host``...)."""
        return list(self._call("GET", f"/connections/username/{_q(user)}", missing_ok=True) or [])

    def close_connection(self, name: str, reason: str) -> bool:
        """Close one connection; False if the API does not know it (yet: it learns of new
        connections from statistics, every few seconds)."""
        path = f"/connections/{_q(name)}"
        answer = self._call("DELETE", path, missing_ok=True, headers={"X-Reason": reason})
        return bool(answer != 404)

    def close_user_connections(self, user: str, reason: str) -> None:
        """Close every connection of ``user``, on every virtual host, at once."""
        path = f"/connections/username/{_q(user)}"
        self._call("DELETE", path, missing_ok=True, headers={"X-Reason": reason})

    # --- what exists ------------------------------------------------------------------------

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/queues/{_q(vhost)}/{_q(name)}"))

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/queues/{_q(vhost)}") or [])

    def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/exchanges/{_q(vhost)}") or [])

    def bindings(self, vhost: str, exchange: str) -> list[tuple[str, str]]:
        """(queue, routing key) of every binding from ``exchange`` to a queue."""
        path = f"/exchanges/{_q(vhost)}/{_q(exchange)}/bindings/source"
        return [
            (str(b["destination"]), str(b["routing_key"]))
            for b in self._call("GET", path, missing_ok=True) or []
            if b.get("destination_type") == "queue"
        ]

    def definitions(self) -> dict[str, Any]:
        """The broker's whole definitions document (with password hashes)."""
        return dict(self._call("GET", "/definitions"))

    def import_definitions(self, definitions: dict[str, Any]) -> None:
        self._call("POST", "/definitions", definitions)


def user_tags(user: dict[str, Any]) -> list[str]:
    """A user's tags: a list since RabbitMQ 3.9, a comma-separated string before."""
    tags = user.get("tags") or []
    if isinstance(tags, str):
        return [t for t in tags.split(",") if t]
    return [str(t) for t in tags]


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
