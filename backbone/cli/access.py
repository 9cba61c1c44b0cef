"""Commands for operators about the broker itself: who can do what (``access check``),
and the definitions that reproduce a deployment (``topology export``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..broker import definitions
from ..broker.access import (
    Grant,
    Resource,
    agency_grant,
    differences,
    evaluate,
    gateway_grant,
    operators_grant,
    workers_grant,
)
from ..broker.mgmt import Management, ManagementError, user_tags
from ..config import get_settings
from ..operations import principal_limits
from ..registry import Registry
from ..store.models import AccessChange, Principal
from . import app
from ._common import fail, plural, with_registry

access_app = typer.Typer(help="What broker users can and cannot do.", no_args_is_help=True)
topology_app = typer.Typer(help="The broker's topology as a deployment file.", no_args_is_help=True)
app.add_typer(access_app, name="access")
app.add_typer(topology_app, name="topology")

LISTED = 6  # inboxes named one by one before they are counted instead
DEFAULT_EXPORT = Path("deploy/rabbitmq/definitions.json")  # tracked: rewritten only on --force
_USER_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,255}")  # what RabbitMQ and a terminal take


def _expected(name: str, principal: Principal | None) -> tuple[str, Grant | None]:
    """(what the name is, the grant it should have)."""
    settings = get_settings()
    if name == settings.workers_user and name != Management(settings.mgmt_url).username:
        return "the workers' user (the backbone's own principal)", workers_grant()
    if name == settings.operators_user:
        return "the operators' dashboard user", operators_grant()
    if principal is None:
        return "not a principal of the registry", None
    patterns = [s.pattern for s in principal.scopes]
    state = "active" if principal.active else "removed"
    limits = principal_limits(settings)
    if principal.kind == "gateway":
        what = f"gateway principal serving {', '.join(patterns)} ({state} in the registry)"
        return what, gateway_grant(name, patterns, limits) if principal.active else None
    what = f"agency principal ({state} in the registry)"
    return what, agency_grant(name, limits) if principal.active else None


def _names(resources: list[Resource], allowed: bool, attribute: str, kind: str) -> list[str]:
    return [
        r.name
        for r in resources
        if r.kind == kind and getattr(r, attribute) == allowed and not r.name.startswith("amq.")
    ]


def _shorten(names: list[str]) -> str:
    """Name the backbone's own resources; count the many inboxes past a few."""
    own = [n for n in names if not n.startswith(("inbox.", "gateway."))]
    inboxes = [n for n in names if n.startswith(("inbox.", "gateway."))]
    shown = own + inboxes[:LISTED]
    rest = len(inboxes) - LISTED
    text = ", ".join(shown) if shown else "nothing"
    return text + (f" and {plural(rest, 'other inbox')}" if rest > 0 else "")


@access_app.command("check")
def access_check(
    name: Annotated[str, typer.Argument(help="A principal (agency code, gateway) or user.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """Print what a broker user can and cannot do on the backbone's virtual host, read
    from the broker, and whether that matches what the registry grants it.
    Exit status 0 when it matches, 1 when it differs or the user is unknown."""
    if not _USER_NAME.fullmatch(name):
        raise fail(
            f"{name[:60]!r} is not a broker user name: 1 to 255 characters, no control characters"
        )
    settings = get_settings()
    mgmt = Management(settings.mgmt_url)
    vhost = settings.vhost
    principal, history = with_registry(lambda r: _principal_and_history(r, name))
    try:
        user = mgmt.user(name)
        limits = mgmt.user_limits(name) if user else {}
        permissions = mgmt.permissions(vhost, name)
        topic = mgmt.topic_permissions(vhost, name)
        connections = [c for c in mgmt.connections(name) if c.get("vhost") == vhost]
        exchanges = sorted(e["name"] for e in mgmt.exchanges(vhost) if e["name"])
        queues = sorted(q["name"] for q in mgmt.queues(vhost))
    except ManagementError as exc:
        raise fail(str(exc)) from None
    what, grant = _expected(name, principal)
    tags = user_tags(user) if user else []
    resources = evaluate(permissions, topic, exchanges, queues)
    drift: list[str] = []
    if grant is not None:
        drift = ["the broker user does not exist"] if user is None else []
        drift += differences(grant, permissions, topic, tags, limits) if user else []
    elif principal is not None and (user is not None and permissions is not None):
        drift = ["it was removed from the registry but still has access to the virtual host"]
    elif permissions is not None and "administrator" not in tags:
        drift = ["a user that is no principal of the backbone has access to the virtual host"]
    unknown = user is None and principal is None and grant is None
    report: dict[str, Any] = {
        "name": name,
        "vhost": vhost,
        "what": what,
        "user_exists": user is not None,
        "tags": tags,
        "open_connections": len(connections),
        "limits": limits,
        "permissions": {k: permissions.get(k, "") for k in ("configure", "write", "read")}
        if permissions
        else None,
        "routing_keys": {t["exchange"]: t.get("write", "") for t in topic},
        "may_configure": [r.name for r in resources if r.configure],
        "may_publish_to": _names(resources, True, "write", "exchange"),
        "may_consume_from": _names(resources, True, "read", "queue"),
        "may_not_publish_to": _names(resources, False, "write", "exchange"),
        "may_not_consume_from": _names(resources, False, "read", "queue"),
        "differences": drift,
        "history": [
            {"at": h.at.isoformat(), "action": h.action, "detail": h.detail, "actor": h.actor}
            for h in history
        ],
    }
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print(report, grant is not None)
    if unknown:
        typer.echo(f"error: {name} is neither a principal nor a broker user", err=True)
    raise typer.Exit(1 if drift or unknown else 0)


async def _principal_and_history(
    registry: Registry, name: str
) -> tuple[Principal | None, list[AccessChange]]:
    return await registry.get_principal(name), await registry.access_history(name)


def _print(report: dict[str, Any], expected: bool) -> None:
    echo = typer.echo
    echo(f"{report['name']}: {report['what']}")
    if not report["user_exists"]:
        echo(f"  broker user: none on this broker (virtual host {report['vhost']!r})")
    else:
        tags = ", ".join(report["tags"]) or "none"
        echo(
            f"  broker user: exists; tags {tags}; "
            f"{plural(report['open_connections'], 'open connection')} to {report['vhost']!r}"
        )
        limits = report["limits"]
        shown_limits = ", ".join(f"{k} {v}" for k, v in sorted(limits.items()))
        echo(f"  limits: {shown_limits or 'none (unlimited connections and channels)'}")
    permissions = report["permissions"]
    if permissions is None:
        echo("  permissions: none on this virtual host (it cannot connect to it)")
    else:
        shown = " · ".join(f"{k} {v or '(nothing)'}" for k, v in permissions.items())
        echo(f"  permissions: {shown}")
        for exchange, keys in report["routing_keys"].items():
            echo(f"  routing keys on {exchange}: {keys or '(none)'}")
        echo("  can:")
        configure = report["may_configure"]
        if configure:
            echo(f"    declare, delete: {_shorten(configure)}")
        echo(f"    publish to: {_shorten(report['may_publish_to'])}")
        echo(f"    consume from: {_shorten(report['may_consume_from'])}")
        echo("  cannot:")
        if not configure:
            echo("    declare, delete or bind any exchange or queue")
        echo(f"    publish to: {_shorten(report['may_not_publish_to'])}")
        echo(f"    consume from: {_shorten(report['may_not_consume_from'])}")
    if report["differences"]:
        echo("  differs from its grant:")
        for line in report["differences"]:
            echo(f"    {line}")
    elif expected:
        echo("  matches what the backbone grants it")
    for entry in report["history"]:
        actor = f" by {entry['actor']}" if entry["actor"] else ""
        detail = f": {entry['detail']}" if entry["detail"] else ""
        echo(f"  {entry['at'][:19]} {entry['action']}{detail}{actor}")


@topology_app.command("export")
def topology_export(
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the definitions file (required unless --force)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help=f"Write {DEFAULT_EXPORT}, the tracked file, when --out is not given."),
    ] = False,
) -> None:
    """Write a RabbitMQ definitions file of the backbone's virtual host: exchanges, queues,
    bindings, policies, the principals', workers' and operators' users with their
    permissions, without passwords. RabbitMQ's load_definitions reads it back."""
    if out is None and not force:
        raise fail(
            f"say where to write: --out FILE (or --force to rewrite the tracked {DEFAULT_EXPORT})"
        )
    target = out or DEFAULT_EXPORT
    if target.is_dir():
        raise fail(f"{target} is a directory; --out names a file")
    settings = get_settings()
    try:
        full = Management(settings.mgmt_url).definitions()
    except ManagementError as exc:
        raise fail(str(exc)) from None
    document = definitions.export(full, settings.vhost)
    if not document["vhosts"]:
        raise fail(f"the broker has no virtual host {settings.vhost!r}: run `backbone init`")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror or exc}") from None
    typer.echo(
        f"{target}: {len(document['exchanges'])} exchanges, {len(document['queues'])} queues, "
        f"{len(document['bindings'])} bindings, {len(document['users'])} users "
        "(without passwords)"
    )
