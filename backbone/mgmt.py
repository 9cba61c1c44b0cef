"""A small client of the RabbitMQ management HTTP API: virtual hosts, users, permissions.

Used to provision principals (broker users) and by the tests to give each test its own
virtual host.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

from .errors import BackboneError


class ManagementError(BackboneError):
    """The management API refused a request or could not be reached."""


@dataclass(frozen=True)
class Management:
    """``url`` is ``http://user:password@host:port/`` (credentials in the URL)."""

    url: str
    timeout: float = 10.0

    def _client(self) -> httpx.Client:
        parts = urlsplit(self.url)
        base = (
            f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}/api"
        )
        auth = (parts.username or "guest", parts.password or "guest")
        return httpx.Client(base_url=base, auth=auth, timeout=self.timeout)

    def _call(self, method: str, path: str, body: dict[str, object] | None = None) -> object:
        try:
            with self._client() as client:
                response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ManagementError(
                f"cannot reach the RabbitMQ management API at {self.url}: {exc}"
            ) from None
        if response.status_code >= 400:
            raise ManagementError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def add_vhost(self, vhost: str) -> None:
        self._call("PUT", f"/vhosts/{quote(vhost, safe='')}", {})

    def delete_vhost(self, vhost: str) -> None:
        self._call("DELETE", f"/vhosts/{quote(vhost, safe='')}")

    def add_user(self, name: str, password: str, tags: str = "") -> None:
        self._call("PUT", f"/users/{quote(name, safe='')}", {"password": password, "tags": tags})

    def set_permissions(
        self, vhost: str, user: str, *, configure: str = "", write: str = "", read: str = ""
    ) -> None:
        self._call(
            "PUT",
            f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            {"configure": configure, "write": write, "read": read},
        )

    def set_topic_permissions(
        self, vhost: str, user: str, exchange: str, *, write: str, read: str = ""
    ) -> None:
        self._call(
            "PUT",
            f"/topic-permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            {"exchange": exchange, "write": write, "read": read},
        )

    def queue(self, vhost: str, name: str) -> dict[str, object]:
        result = self._call("GET", f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        assert isinstance(result, dict)
        return result
