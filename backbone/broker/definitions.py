"""A RabbitMQ definitions document of the backbone's virtual host, to reproduce a
deployment (``backbone topology export``; RabbitMQ's ``load_definitions`` or
``POST /api/definitions`` reads it back).

It holds the exchanges, queues, bindings, policies and parameters of the virtual host, the
users that have permissions there (principals, workers, operators) with those permissions
and topic permissions, and no secret: password hashes are left out (RabbitMQ gives an
imported user without one a random password; `agency add ... --rotate-password` sets a
known one). Administrators are left out: they belong to the deployment, not the backbone.
"""

from __future__ import annotations

from typing import Any

from .mgmt import user_tags

SCOPED = ("parameters", "policies", "queues", "exchanges", "bindings")
SECRETS = ("password_hash", "hashing_algorithm")


def _key(item: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(item.get(k, ""))
        for k in ("name", "user", "exchange", "source", "destination", "routing_key")
    )


def export(full: dict[str, Any], vhost: str) -> dict[str, Any]:
    """The part of the broker's whole definitions (``GET /api/definitions``) that belongs
    to ``vhost``, in a stable order, without password hashes."""
    permissions = [p for p in full.get("permissions", []) if p.get("vhost") == vhost]
    users = [
        {k: v for k, v in user.items() if k not in SECRETS}
        for user in full.get("users", [])
        if any(p["user"] == user["name"] for p in permissions)
        and "administrator" not in user_tags(user)
    ]
    kept = {user["name"] for user in users}
    document: dict[str, Any] = {
        "rabbit_version": full.get("rabbit_version"),
        "rabbitmq_version": full.get("rabbitmq_version", full.get("rabbit_version")),
        "vhosts": [v for v in full.get("vhosts", []) if v.get("name") == vhost],
        "users": users,
        "permissions": [p for p in permissions if p["user"] in kept],
        "topic_permissions": [
            t
            for t in full.get("topic_permissions", [])
            if t.get("vhost") == vhost and t.get("user") in kept
        ],
    }
    for section in SCOPED:
        document[section] = [i for i in full.get(section, []) if i.get("vhost") == vhost]
    for items in document.values():
        if isinstance(items, list):
            items.sort(key=_key)
    return document
