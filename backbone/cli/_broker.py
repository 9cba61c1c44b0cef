"""The broker side of the registry commands: declaring, provisioning and revoking, with
messages an operator can act on."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
import typer
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..broker import topology
from ..broker.access import Grant, UserLimits
from ..broker.mgmt import Management, ManagementError
from ..broker.provisioning import Provisioned, Provisioner, ProvisioningError, Revoked
from ..config import get_settings
from ..errors import BrokerRefused, BrokerUnreachable
from ._common import fail, plural, warn, with_registry

T = TypeVar("T")
PROGRESS_FROM = 50  # bindings to change before a progress bar is worth showing


def provisioner() -> Provisioner:
    settings = get_settings()
    return Provisioner(Management(settings.mgmt_url), settings.vhost)


def actor() -> str:
    """Who made a change, for the record: the operating-system user and the broker
    administrator it acted as."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return f"{login} as {Management(get_settings().mgmt_url).username}"


def on_channel(work: Callable[[AbstractChannel], Awaitable[T]]) -> T:
    """Run ``work`` on a channel of the broker, as the administrator."""

    async def run() -> T:
        try:
            connection = await aio_pika.connect(get_settings().admin_amqp_url, timeout=10)
        except (TimeoutError, OSError, ConnectionError, AMQPError) as exc:
            raise BrokerUnreachable(str(exc) or type(exc).__name__) from None
        try:
            return await work(await connection.channel())
        except AMQPError as exc:
            raise BrokerRefused(str(exc) or type(exc).__name__) from None
        finally:
            await connection.close()

    return asyncio.run(run())


def declare(what: str, work: Callable[[AbstractChannel], Awaitable[None]]) -> bool:
    """Declare on the configured broker; a warning (not a failure) if it is unreachable."""
    try:
        on_channel(work)
    except BrokerUnreachable as exc:
        warn(
            f"{what} not declared, the broker is unreachable ({exc}); "
            "run `backbone init` once it is up"
        )
        return False
    except BrokerRefused as exc:
        raise fail(f"the broker refused to declare {what}: {exc}") from None
    return True


def provision(
    username: str, grant: Grant, *, password: str | None = None, rotate: bool = False
) -> Provisioned:
    """``Provisioner.ensure``, failing with what to do when the broker cannot be reached."""
    try:
        return provisioner().ensure(username, grant, password=password, rotate=rotate)
    except ProvisioningError as exc:
        raise fail(str(exc)) from None
    except ManagementError as exc:
        raise _not_provisioned(username, exc) from None


def _not_provisioned(username: str, exc: ManagementError) -> typer.Exit:
    return fail(
        f"broker access for {username} not provisioned: {exc}; the registry keeps what "
        "was done, run the same command again once the broker answers"
    )


def has_user(username: str) -> bool | None:
    """Does the broker have this user? None when the management API cannot say."""
    try:
        return provisioner().mgmt.user(username) is not None
    except ManagementError:
        return None


def principal_limits() -> UserLimits:
    """The connection and channel limits of every principal's broker user
    (``BACKBONE_PRINCIPAL_MAX_CONNECTIONS``, ``BACKBONE_PRINCIPAL_MAX_CHANNELS``)."""
    settings = get_settings()
    return UserLimits(settings.principal_max_connections, settings.principal_max_channels)


@dataclass(frozen=True)
class Routes:
    """What ``route`` changed on edoc.deliver: (queue, agency) bindings."""

    bound: frozenset[topology.Binding]
    unbound: frozenset[topology.Binding]

    def lines(self, listed: int = 10) -> list[str]:
        """One line per agency whose queue changed; a count past ``listed``."""
        if len(self.bound) + len(self.unbound) > listed:
            return [
                f"deliveries: {plural(len(self.bound), 'binding')} added, "
                f"{len(self.unbound):,} removed on {topology.DELIVER}"
            ]
        before = {key: queue for queue, key in self.unbound}
        said = [
            f"deliveries to {key} go to {queue}"
            + (f" (instead of {before[key]})" if key in before else "")
            for queue, key in sorted(self.bound, key=lambda b: b[1])
        ]
        now = {key for _, key in self.bound}
        said += [
            f"{queue} no longer receives deliveries to {key}"
            for queue, key in sorted(self.unbound)
            if key not in now
        ]
        return said


def route() -> Routes | None:
    """Bind every registered agency to the one queue that serves it
    (``topology.serving_queue``) and remove every other binding to an inbox or gateway
    queue. None (with a warning) when the broker cannot be reached: ``backbone init``
    does it later."""
    settings = get_settings()
    wanted = with_registry(lambda r: r.delivery_queues())
    try:
        current = provisioner().mgmt.bindings(settings.vhost, topology.DELIVER)
    except ManagementError as exc:
        _not_routed(str(exc))
        return None
    bind, unbind = topology.route_changes(wanted, current)
    if bind or unbind:
        try:
            with Progress(
                TextColumn("binding inboxes"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                disable=len(bind) + len(unbind) < PROGRESS_FROM,
            ) as progress:
                task = progress.add_task("bind", total=len(bind) + len(unbind))
                on_channel(
                    lambda channel: topology.apply_routes(
                        channel,
                        bind,
                        unbind,
                        settings.delivery_limit,
                        lambda: progress.advance(task),
                    )
                )
        except BrokerUnreachable as exc:
            _not_routed(str(exc))
            return None
        except BrokerRefused as exc:
            raise fail(
                f"the broker refused to bind the inboxes: {exc} (run `backbone init` first)"
            ) from None
    return Routes(frozenset(bind), frozenset(unbind))


def _not_routed(why: str) -> None:
    warn(
        f"inboxes not declared and bound, the broker is unreachable ({why}); "
        "run `backbone init` once it is up"
    )


def revoke(username: str) -> Revoked:
    try:
        return provisioner().revoke(username)
    except ProvisioningError as exc:
        raise fail(str(exc)) from None
    except ManagementError as exc:
        raise fail(
            f"broker access of {username} not revoked: {exc}; it is deactivated in the "
            "registry (the validator refuses it), run the same command again once the "
            "broker answers"
        ) from None


def describe(done: Provisioned) -> str:
    """What provisioning did, in one line for the operator and the record."""
    if not done.changes:
        return f"broker access of {done.username} unchanged"
    text = f"broker user {done.username}: {', '.join(done.changes)}"
    if done.closed_connections:
        text += f"; {plural(done.closed_connections, 'open connection')} closed"
    return text


def show_password(done: Provisioned) -> None:
    if done.password is not None:
        typer.echo(f"password of {done.username} (shown once, store it now): {done.password}")


def waiting(queue: str) -> int | None:
    """Messages ready in ``queue`` (exact, from the broker), or None if it is absent."""

    async def count(channel: AbstractChannel) -> int | None:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count

    try:
        return on_channel(count)
    except (BrokerUnreachable, BrokerRefused):  # no broker, or no such queue
        return None


def inbox_of(kind: str, username: str) -> str:
    return topology.gateway_queue(username) if kind == "gateway" else topology.inbox(username)
