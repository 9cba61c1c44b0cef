"""Who may do what on the broker: the grants of each kind of principal, and how RabbitMQ
reads them. Pure (no I/O): ``backbone.broker.provisioning`` applies grants, ``access check`` uses
``evaluate`` to say what a user can and cannot do.

RabbitMQ checks three regular expressions per user and virtual host (configure: declare
and delete; write: publish to an exchange, bind to a queue; read: consume from a queue,
bind from an exchange) and, per exchange, one over routing keys (topic permissions). The
grants here are the security model of DESIGN.md:

- an agency's user: write ``edoc.submit`` with its own identifier as the only routing key,
  read its own inbox, configure nothing;
- a gateway's user: the same for every agency its patterns match, and its gateway queue;
- the workers' user: consume ``backbone.validate``, ``backbone.tracker`` and
  ``backbone.unroutable`` (to report undeliverable copies), publish to
  ``edoc.deliver`` and ``backbone.events`` (nobody else may), configure nothing;
- the operators' user: the dashboard (tag ``monitoring``), no access to any message.

Principals (agencies, gateways) also get per-user limits on connections and channels
(RabbitMQ user limits, global to the user): one misbehaving client cannot exhaust the
broker for the others. The workers and the operators get none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product

from ..agency import validate_pattern
from . import topology

NOTHING = ""  # RabbitMQ reads an empty pattern as: matches no resource
_WORD = "[^.]+"
IDENTIFIER_WORDS = 4  # LLL.KK.MM.XNN


@dataclass(frozen=True)
class UserLimits:
    """Connections and channels (over all its connections) one broker user may open."""

    max_connections: int = 20
    max_channels: int = 200

    def as_broker(self) -> dict[str, int]:
        """As the management API names them (``/api/user-limits``)."""
        return {"max-connections": self.max_connections, "max-channels": self.max_channels}


PRINCIPAL_LIMITS = UserLimits()


@dataclass(frozen=True)
class Grant:
    """What a broker user may do on the backbone's virtual host."""

    configure: str = NOTHING
    write: str = NOTHING
    read: str = NOTHING
    topic: dict[str, str] = field(default_factory=dict)  # exchange -> routing-key pattern
    tags: tuple[str, ...] = ()
    limits: UserLimits | None = None  # None: no user limits

    def permissions(self) -> dict[str, str]:
        return {"configure": self.configure, "write": self.write, "read": self.read}


def _exactly(names: Iterable[str]) -> str:
    """A pattern matching exactly these names (given as regular expressions)."""
    alternatives = list(dict.fromkeys(names))
    if not alternatives:
        return NOTHING
    body = alternatives[0] if len(alternatives) == 1 else f"({'|'.join(alternatives)})"
    return f"^{body}$"


def key_regex(pattern: str) -> str:
    """The regular expression (unanchored) of the agency identifiers a topic pattern
    matches: ``*.*.*.H41`` -> ``[^.]+\\.[^.]+\\.[^.]+\\.H41``. Identifiers have four
    words, so each ``#`` is expanded to the word counts that make four."""
    words = validate_pattern(pattern).split(".")
    hashes = words.count("#")
    fixed = len(words) - hashes
    shapes: list[str] = []
    for counts in product(range(IDENTIFIER_WORDS + 1), repeat=hashes):
        if fixed + sum(counts) != IDENTIFIER_WORDS:
            continue
        expanded: list[str] = []
        spans = iter(counts)
        for word in words:
            if word == "#":
                expanded.extend([_WORD] * next(spans))
            else:
                expanded.append(_WORD if word == "*" else re.escape(word))
        shapes.append(r"\.".join(expanded))
    shapes = list(dict.fromkeys(shapes))
    return shapes[0] if len(shapes) == 1 else f"(?:{'|'.join(shapes)})"


def agency_grant(code: str, limits: UserLimits = PRINCIPAL_LIMITS) -> Grant:
    return gateway_grant(None, [code], limits)


def gateway_grant(
    name: str | None, patterns: Sequence[str], limits: UserLimits = PRINCIPAL_LIMITS
) -> Grant:
    """An agency (``name`` None, one exact pattern) or a gateway serving ``patterns``: it
    publishes submissions under the identifiers it serves and reads their inboxes."""
    keys = [key_regex(p) for p in patterns]
    queues = [re.escape(topology.gateway_queue(name))] if name else []
    queues += [re.escape("inbox.") + key for key in keys]
    return Grant(
        write=_exactly([re.escape(topology.SUBMIT)]),
        read=_exactly(queues),
        topic={topology.SUBMIT: _exactly(keys)},
        limits=limits,
    )


def workers_grant() -> Grant:
    """The backbone's own user: the only one that may publish deliveries and events."""
    return Grant(
        write=_exactly(re.escape(x) for x in (topology.DELIVER, topology.EVENTS)),
        read=_exactly(
            re.escape(x) for x in (topology.VALIDATE, topology.TRACKER, topology.UNROUTABLE)
        ),
    )


def operators_grant() -> Grant:
    """The dashboard: sees queues, rates and connections; touches no message."""
    return Grant(tags=("monitoring",))


# --- reading permissions as RabbitMQ does --------------------------------------------------


def allows(pattern: str | None, name: str) -> bool:
    """Does a permission pattern admit ``name``? (RabbitMQ: an empty pattern admits
    nothing; otherwise an unanchored regular-expression search.)"""
    if not pattern:
        return False
    try:
        return re.search(pattern, name) is not None
    except re.error:  # a pattern Python cannot read; RabbitMQ's PCRE may: say no, not crash
        return False


@dataclass(frozen=True)
class Resource:
    """An exchange or a queue, and what one user may do with it."""

    kind: str  # exchange | queue
    name: str
    configure: bool
    write: bool
    read: bool
    routing_keys: str | None = None  # a topic permission's pattern on this exchange


def evaluate(
    permissions: dict[str, str] | None,
    topic: Iterable[dict[str, str]],
    exchanges: Iterable[str],
    queues: Iterable[str],
) -> list[Resource]:
    """What ``permissions`` (as the broker reports them) allow on each resource."""
    perms = permissions or {}
    keys = {entry["exchange"]: entry.get("write", "") for entry in topic}
    found = [
        Resource(
            kind,
            name,
            allows(perms.get("configure"), name),
            allows(perms.get("write"), name),
            allows(perms.get("read"), name),
            keys.get(name) if kind == "exchange" else None,
        )
        for kind, names in (("exchange", exchanges), ("queue", queues))
        for name in names
    ]
    return found


def differences(
    grant: Grant,
    permissions: dict[str, str] | None,
    topic: Iterable[dict[str, str]],
    tags: Iterable[str],
    limits: dict[str, int] | None = None,
) -> list[str]:
    """How what the broker has differs from ``grant``; empty when it matches. ``limits``
    are the user's limits as the broker reports them (``max-connections``...)."""
    found: list[str] = []
    have = permissions or {}
    if permissions is None:
        found.append("no permissions on the virtual host")
    else:
        for what, wanted in grant.permissions().items():
            if have.get(what, "") != wanted:
                found.append(f"{what} is {have.get(what, '')!r}, expected {wanted!r}")
    topics = {entry["exchange"]: entry.get("write", "") for entry in topic}
    for exchange, wanted in grant.topic.items():
        if topics.get(exchange) != wanted:
            shown = repr(topics[exchange]) if exchange in topics else "unrestricted"
            found.append(f"routing keys on {exchange} are {shown}, expected {wanted!r}")
    for exchange in sorted(set(topics) - set(grant.topic)):
        found.append(f"an unexpected topic permission on {exchange}")
    missing, extra = set(grant.tags) - set(tags), set(tags) - set(grant.tags)
    if missing:
        found.append(f"tags lack {', '.join(sorted(missing))}")
    if extra:  # impersonator lets a user set any user_id; administrator, anything
        found.append(f"unexpected tags {', '.join(sorted(extra))}")
    wanted_limits = grant.limits.as_broker() if grant.limits else {}
    have_limits = limits or {}
    for name in sorted(set(wanted_limits) | set(have_limits)):
        if have_limits.get(name) != wanted_limits.get(name):
            found.append(
                f"{name} is {have_limits.get(name, 'none')}, "
                f"expected {wanted_limits.get(name, 'none')}"
            )
    return found
