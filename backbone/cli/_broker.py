"""The registry commands' side of :mod:`backbone.operations`: one event loop per command
with the configured deployment, and what each step did in words an operator can act on."""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..broker import topology
from ..broker.mgmt import Management
from ..broker.provisioning import Provisioned
from ..config import get_settings
from ..operations import (
    Event,
    ForeignUser,
    Operations,
    RevokedUser,
    Routes,
    Skipped,
    Tell,
    UserProvisioned,
)
from ..registry import Registry
from ._common import fail, plural, warn, with_registry

T = TypeVar("T")
PROGRESS_FROM = 50  # bindings to change before a progress bar is worth showing
LISTED = 10  # agencies whose new queue is named one by one


def actor() -> str:
    """Who made a change, for the record: the operating-system user and the broker
    administrator it acted as."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return f"{login} as {Management(get_settings().mgmt_url).username}"


def run(work: Callable[[Operations], Awaitable[T]], tell: Tell) -> T:
    """Run ``work`` on the configured deployment in one event loop, telling ``tell`` what
    each step did; its errors end the command as one line."""

    async def operate(registry: Registry) -> T:
        operations = Operations.configured(
            get_settings(), registry, actor=actor(), tell=tell, progress=_bar
        )
        try:
            return await work(operations)
        except ForeignUser as exc:
            raise fail(
                f"{exc}; to make it this principal's, give it a new password with "
                "--rotate-password (or --password-file)"
            ) from None

    return with_registry(operate)


@contextmanager
def _bar(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr while many bindings change."""
    with Progress(
        TextColumn("binding inboxes"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=total < PROGRESS_FROM,
    ) as progress:
        task = progress.add_task("bind", total=total)
        yield lambda: progress.advance(task)


def show(event: Event) -> None:
    """Say what a step did (the events every registry command shares)."""
    if isinstance(event, UserProvisioned):
        suffix = {
            "principal": "",
            "workers": " (the workers)",
            "operators": " (the operators' dashboard)",
        }
        typer.echo(describe(event.done) + suffix[event.role])
        show_password(event.done)
    elif isinstance(event, Routes):
        for line in route_lines(event):
            typer.echo(line)
        for queue, kept in sorted(event.kept.items()):
            typer.echo(
                f"{queue} keeps {plural(kept, 'message')} that arrived before; nothing new arrives "
                "there for the agencies it no longer serves (what serves them now may read it)"
            )
    elif isinstance(event, Skipped):
        warn(event.reason)
    elif isinstance(event, RevokedUser):
        typer.echo(f"{event.revoked.username}: {event.detail}")
        if event.kept:
            typer.echo(
                f"{event.queue} keeps {plural(event.kept, 'message')} not yet received; they stay "
                "there until the principal is added again or an operator moves them"
            )


def route_lines(routes: Routes) -> list[str]:
    """One line per agency whose queue changed; a count past ``LISTED``."""
    if len(routes.bound) + len(routes.unbound) > LISTED:
        return [
            f"deliveries: {plural(len(routes.bound), 'binding')} added, "
            f"{len(routes.unbound):,} removed on {topology.DELIVER}"
        ]
    before = {key: queue for queue, key in routes.unbound}
    said = [
        f"deliveries to {key} go to {queue}"
        + (f" (instead of {before[key]})" if key in before else "")
        for queue, key in sorted(routes.bound, key=lambda b: b[1])
    ]
    now = {key for _, key in routes.bound}
    said += [
        f"{queue} no longer receives deliveries to {key}"
        for queue, key in sorted(routes.unbound)
        if key not in now
    ]
    return said


def describe(done: Provisioned) -> str:
    """What provisioning did, in one line."""
    if not done.changes:
        return f"broker access of {done.username} unchanged"
    text = f"broker user {done.username}: {', '.join(done.changes)}"
    if done.closed_connections:
        text += f"; {plural(done.closed_connections, 'open connection')} closed"
    return text


def show_password(done: Provisioned) -> None:
    if done.password is not None:
        typer.echo(f"password of {done.username} (shown once, store it now): {done.password}")
