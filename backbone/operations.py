"""The operator's workflows, written once: set a deployment up (:meth:`Operations.init`),
add and remove agencies and gateways with their broker users, keep the backbone's own users,
and route every agency to the one queue that serves it.

The CLI, the demo, the benchmark and the pipeline tests run these same steps, so that what
the tests prove is what an operator gets. Policy stays where it is: ``broker.access`` says
what each user is granted, ``broker.topology`` names the queues and computes the routes,
the registry holds who exists; here are the side effects, in the order that keeps a
document readable at every moment (a principal's user before its deliveries move to its
queue; bindings added before stale ones go).

Every step is idempotent: after a failure the same operation, run again, finishes what it
had begun. What each step did is told as it happens (``Operations.tell``, which the CLI
prints and others may ignore), so that an operator learns what was done before a later step
failed. Failures are exceptions of the backbone's tree: :class:`NameRefused` before
anything is written, :class:`Unfinished` when the broker failed part way, ``BrokerUnreachable``
and ``BrokerRefused`` with a sentence that says what was not done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError
from cryptography import x509
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from .broker import topology
from .broker.access import (
    PRINCIPAL_LIMITS,
    Grant,
    UserLimits,
    agency_grant,
    gateway_grant,
    operators_grant,
    workers_grant,
)
from .broker.mgmt import Management, ManagementError
from .broker.provisioning import Provisioned, Provisioner, Revoked
from .config import Settings
from .errors import BackboneError, BrokerError, BrokerRefused, BrokerUnreachable
from .registry import ImportReport, Registry, gateway_name
from .store import migrate
from .store.models import Principal

T = TypeVar("T")
KEPT_CHECKED = 10  # queues that lost bindings whose waiting messages are counted


class NameRefused(BackboneError):
    """A principal may not take this name: it is one of the backbone's own users (or the
    administrator's), or a user the backbone provisioned for itself. Nothing was written."""


class ForeignUser(NameRefused):
    """The broker has a user of this name that the backbone did not create: taking it over
    (its tags, its rights) takes an explicit new password."""


class DatabaseSetupError(BackboneError):
    """The database cannot be created or migrated (the message has its password masked)."""


class Unfinished(BrokerError):
    """The broker failed part way through an operation: what was done stays done (the
    registry keeps it), and the same operation run again once the broker answers ends it."""


# --- what an operation tells as it goes ------------------------------------------------------


@dataclass(frozen=True)
class DatabaseReady:
    """The database has every migration."""


@dataclass(frozen=True)
class Registered:
    """The registry holds the agency or gateway ``name``; its broker side comes next."""

    name: str


Role = Literal["principal", "workers", "operators"]


@dataclass(frozen=True)
class UserProvisioned:
    """A broker user was brought in line with its grant (``done.changes`` empty: it was)."""

    done: Provisioned
    role: Role


@dataclass(frozen=True)
class Routes:
    """What routing changed on edoc.deliver, as (queue, agency) bindings, and how many
    messages wait in queues that lost bindings (the first few of them)."""

    bound: frozenset[topology.Binding]
    unbound: frozenset[topology.Binding]
    kept: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A broker step was not done because the broker is unreachable; the registry holds
    the change and ``backbone init`` does the step later. ``reason`` says so in full."""

    reason: str


@dataclass(frozen=True)
class TopologyReady:
    """The topology is declared and every agency bound to its queue (``init``)."""


@dataclass(frozen=True)
class WorkersAreAdministrator:
    """The workers connect as the administrator: for local development only."""

    username: str


@dataclass(frozen=True)
class WithoutUser:
    """Active principals whose broker user does not exist (``init`` does not invent their
    passwords: ``agency add`` or ``gateway add`` gives them one)."""

    usernames: tuple[str, ...]


@dataclass(frozen=True)
class Deactivated:
    """The registry deactivated agency or gateway ``name``; its revocation comes next."""

    name: str


@dataclass(frozen=True)
class RevokedUser:
    """A principal's broker access was revoked; ``kept`` messages (None: no such queue)
    stay in its ``queue``."""

    revoked: Revoked
    queue: str
    kept: int | None

    @property
    def detail(self) -> str:
        """In one line, for the operator and the access record."""
        revoked = self.revoked
        return (
            (
                "broker user deleted"
                if revoked.user_deleted
                else "access to the virtual host removed"
            )
            + f", {_count(revoked.closed_connections, 'open connection')} closed"
            + (
                f", {_count(self.kept, 'message')} kept in {self.queue}"
                if self.kept is not None
                else ""
            )
        )


Event = (
    DatabaseReady
    | Registered
    | UserProvisioned
    | Routes
    | Skipped
    | TopologyReady
    | WorkersAreAdministrator
    | WithoutUser
    | Deactivated
    | RevokedUser
)
Tell = Callable[[Event], None]
Progress = Callable[[int], AbstractContextManager[Callable[[], None]]]
"""Given how many bindings routing changes, a context around the change that yields what to
call after each one (declaring thousands of quorum inboxes takes minutes)."""


def ignore(event: Event) -> None:
    """Tell nobody: the demo, the benchmark and the tests read the results instead."""


def no_progress(total: int) -> AbstractContextManager[Callable[[], None]]:
    return nullcontext(lambda: None)


def principal_limits(settings: Settings) -> UserLimits:
    """The connection and channel limits of every principal's broker user
    (``BACKBONE_PRINCIPAL_MAX_CONNECTIONS``, ``BACKBONE_PRINCIPAL_MAX_CHANNELS``)."""
    return UserLimits(settings.principal_max_connections, settings.principal_max_channels)


def hide_password(url: str) -> str:
    """A database URL as it may be shown: the password masked (``***``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "the configured BACKBONE_DATABASE_URL (not a database URL)"


@dataclass(frozen=True)
class Operations:
    """The workflows on one deployment: its registry, the provisioner of its virtual host,
    the administrator's AMQP URL of that virtual host (declaring and binding take it), the
    backbone's own users (no principal may take their names), the queues' delivery limit,
    the principals' user limits, and who acts (for the access record)."""

    registry: Registry
    provisioner: Provisioner
    admin_url: str
    workers: str
    workers_password: str | None = None  # None: generated when the user is created
    operators: str = "operators"
    delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT
    limits: UserLimits = PRINCIPAL_LIMITS
    actor: str = "backbone"
    tell: Tell = ignore
    progress: Progress = no_progress

    @classmethod
    def configured(
        cls,
        settings: Settings,
        registry: Registry,
        *,
        actor: str = "backbone",
        tell: Tell = ignore,
        progress: Progress = no_progress,
    ) -> Operations:
        """The operations of the deployment ``settings`` describe: the workers' user and
        password are those of BACKBONE_AMQP_URL, the administrator that of BACKBONE_MGMT_URL."""
        password = urlsplit(settings.amqp_url).password
        return cls(
            registry,
            Provisioner(Management(settings.mgmt_url), settings.vhost),
            settings.admin_amqp_url,
            settings.workers_user,
            unquote(password) if password else None,
            settings.operators_user,
            settings.delivery_limit,
            principal_limits(settings),
            actor,
            tell,
            progress,
        )

    @property
    def mgmt(self) -> Management:
        return self.provisioner.mgmt

    # --- a deployment ----------------------------------------------------------------------

    async def init(self, *, broker: bool = True) -> None:
        """Every migration, then (with ``broker``) the topology with every active gateway's
        queue, every agency bound to the queue that serves it, the backbone's own users, and
        the grants of the registered principals that have a user. Safe to run again: what
        matches is left as it is. The broker being unreachable is ``BrokerUnreachable``
        here: setting it up is the point."""
        url = self.registry.store.url
        try:
            await asyncio.to_thread(migrate.upgrade, url)
        except (DBAPIError, OSError, ValueError, ArgumentError) as exc:
            raise DatabaseSetupError(str(exc).replace(url, hide_password(url))) from None
        self.tell(DatabaseReady())
        if not broker:
            return
        principals = [p for p in await self.registry.list_principals() if p.active]
        await self.declare(principals)
        self.tell(await self.route())
        self.tell(TopologyReady())
        await self.internal_users()
        missing = []
        for principal in principals:
            if await self._has_user(principal.username) is False:
                missing.append(principal.username)
                continue
            done = await self._provision(principal.username, self.grant_of(principal))
            self.tell(UserProvisioned(done, "principal"))
        if missing:
            self.tell(WithoutUser(tuple(missing)))

    async def declare(self, principals: Iterable[Principal] = ()) -> None:
        """The backbone's topology, and the queue of each gateway among ``principals``:
        a gateway's queue, bound or not, is its to read."""
        gateways = [p.username for p in principals if p.kind == "gateway"]

        async def work(channel: AbstractChannel) -> None:
            await topology.declare(channel, self.delivery_limit)
            for name in gateways:
                await topology.declare_gateway(channel, name, [], self.delivery_limit)

        await self._declare("the topology", work)

    async def internal_users(self) -> None:
        """The workers' user (unless the workers connect as the administrator) and the
        operators' dashboard user, each with its grant."""
        if self.workers == self.mgmt.username:
            self.tell(WorkersAreAdministrator(self.workers))
        else:
            await self.provision_workers()
        done = await self._provision(self.operators, operators_grant(), what="the operators")
        self.tell(UserProvisioned(done, "operators"))

    async def provision_workers(self) -> Provisioned:
        """The workers' user with ``workers_password`` (generated when None and new)."""
        done = await self._provision(
            self.workers, workers_grant(), password=self.workers_password, what="the workers"
        )
        self.tell(UserProvisioned(done, "workers"))
        return done

    # --- agencies and gateways ---------------------------------------------------------------

    async def add_agency(
        self,
        code: str,
        name: str,
        *,
        parent: str | None = None,
        certificates: Iterable[x509.Certificate] = (),
        principal: bool = True,
        password: str | None = None,
        rotate: bool = False,
    ) -> Provisioned | None:
        """Register an agency (or rename and re-activate it) with its certificates and,
        with ``principal``, its broker user (named by the identifier: it may submit under
        that identifier and read its own inbox, nothing else); then route. Its user comes
        before its deliveries move to its inbox. The user's provisioning (its password once,
        when generated), or None without ``principal``."""
        if principal:
            await self.check_name(code, password, rotate)
        await self.registry.add_agency(
            code, name, parent=parent, principal=principal, certificates=certificates
        )
        self.tell(Registered(code))
        done = None
        if principal:
            grant = agency_grant(code, self.limits)
            done = await self._provision_principal(code, grant, password, rotate)
        await self._route_unless_unreachable()
        return done

    async def remove_agency(self, code: str) -> bool:
        """Deactivate an agency, route, and revoke its broker user; its inbox and what waits
        there stay. False when nothing was left to do (already deactivated, no access)."""
        changed = await self.registry.deactivate_agency(code)
        if not changed and not await self._still_granted(code):
            return False
        self.tell(Deactivated(code))
        await self._route_unless_unreachable()
        await self._revoke(code, topology.inbox(code))
        return True

    async def import_agencies(
        self, path: Path, advance: Callable[[int, int], None] | None = None
    ) -> ImportReport:
        """Import agencies from CSV (``Registry.import_csv``), then route them."""
        report = await self.registry.import_csv(path, advance)
        await self._route_unless_unreachable()
        return report

    async def add_gateway(
        self,
        name: str,
        patterns: list[str],
        *,
        password: str | None = None,
        rotate: bool = False,
    ) -> Provisioned:
        """Register a gateway serving ``patterns``, declare its queue (even while every
        agency it covers has an inbox of its own), provision its user, then route."""
        gateway_name(name)
        await self.check_name(name, password, rotate)
        await self.registry.add_gateway(name, patterns)
        self.tell(Registered(name))

        async def work(channel: AbstractChannel) -> None:
            await topology.declare_gateway(channel, name, [], self.delivery_limit)

        try:
            await self._declare(f"the queue of gateway {name}", work)
        except BrokerUnreachable as exc:
            self.tell(Skipped(str(exc)))
        grant = gateway_grant(name, patterns, self.limits)
        done = await self._provision_principal(name, grant, password, rotate)
        await self._route_unless_unreachable()
        return done

    async def remove_gateway(self, name: str) -> bool:
        """Deactivate a gateway, route (the agencies it served go to their inboxes), and
        revoke its user; what waits in its queue stays. False when nothing was left to do."""
        changed = await self.registry.remove_gateway(name)
        if not changed and not await self._still_granted(name):
            return False
        self.tell(Deactivated(name))
        await self._route_unless_unreachable()
        await self._revoke(name, topology.gateway_queue(name))
        return True

    def grant_of(self, principal: Principal) -> Grant:
        """What the registry grants a principal, with the principals' user limits."""
        if principal.kind == "gateway":
            patterns = [s.pattern for s in principal.scopes]
            return gateway_grant(principal.username, patterns, self.limits)
        return agency_grant(principal.username, self.limits)

    async def check_name(self, name: str, password: str | None, rotate: bool) -> None:
        """Refuse a principal's name before anything is written: a name of the backbone's
        own users; a user the backbone provisioned for itself (the workers', the operators',
        under another configuration); a user it never provisioned, unless ``password`` or
        ``rotate`` says to take it over. When the management API cannot say whether the user
        exists, the name is allowed: provisioning then says why it failed."""
        taken = {
            "guest": "RabbitMQ's default administrator",
            self.workers: "the workers' user",
            self.operators: "the operators' user",
            self.mgmt.username: "the administrator",
        }
        if name in taken:
            raise NameRefused(f"{name!r} is {taken[name]}; choose another name")
        principal = await self.registry.get_principal(name)
        history = await self.registry.access_history(name)
        if history and principal is None:
            raise NameRefused(
                f"{name!r} is a broker user the backbone provisioned for itself "
                f"({history[0].detail or history[0].action}); choose another name"
            )
        if history or password is not None or rotate or not await self._has_user(name):
            return
        raise ForeignUser(
            f"the broker already has a user {name!r} that the backbone did not create"
        )

    # --- routing -------------------------------------------------------------------------------

    async def route(self) -> Routes:
        """Bind every registered agency to the one queue that serves it
        (``topology.serving_queue``) and remove every other binding to an inbox or gateway
        queue; count what waits in the first queues that lost bindings."""
        wanted = await self.registry.delivery_queues()
        try:
            current = await asyncio.to_thread(
                self.mgmt.bindings, self.provisioner.vhost, topology.DELIVER
            )
        except ManagementError as exc:
            raise BrokerUnreachable(_not_routed(str(exc))) from None
        bind, unbind = topology.route_changes(wanted, current)
        if bind or unbind:
            with self.progress(len(bind) + len(unbind)) as done:

                async def work(channel: AbstractChannel) -> None:
                    await topology.apply_routes(channel, bind, unbind, self.delivery_limit, done)

                try:
                    await self._on_channel(work)
                except BrokerUnreachable as exc:
                    raise BrokerUnreachable(_not_routed(str(exc))) from None
                except BrokerRefused as exc:
                    raise BrokerRefused(
                        f"the broker refused to bind the inboxes: {exc} (run `backbone init` first)"
                    ) from None
        kept = {}
        for queue in sorted({q for q, _ in unbind})[:KEPT_CHECKED]:
            count = await self.waiting(queue)
            if count:
                kept[queue] = count
        return Routes(frozenset(bind), frozenset(unbind), kept)

    async def waiting(self, queue: str) -> int | None:
        """Messages ready in ``queue`` (exact, from the broker), or None if it is absent
        (or the broker cannot say)."""

        async def count(channel: AbstractChannel) -> int | None:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count

        try:
            return await self._on_channel(count)
        except (BrokerUnreachable, BrokerRefused):
            return None

    # --- the steps -----------------------------------------------------------------------------

    async def _route_unless_unreachable(self) -> None:
        """Route; an unreachable broker is told, not raised: the registry holds the change
        and ``backbone init`` routes later."""
        try:
            self.tell(await self.route())
        except BrokerUnreachable as exc:
            self.tell(Skipped(str(exc)))

    async def _declare(self, what: str, work: Callable[[AbstractChannel], Awaitable[None]]) -> None:
        try:
            await self._on_channel(work)
        except BrokerUnreachable as exc:
            raise BrokerUnreachable(
                f"{what} not declared, the broker is unreachable ({exc}); "
                "run `backbone init` once it is up"
            ) from None
        except BrokerRefused as exc:
            raise BrokerRefused(f"the broker refused to declare {what}: {exc}") from None

    async def _on_channel(self, work: Callable[[AbstractChannel], Awaitable[T]]) -> T:
        """Run ``work`` on a channel of the virtual host, as the administrator."""
        try:
            connection = await aio_pika.connect(self.admin_url, timeout=10)
        except (TimeoutError, OSError, ConnectionError, AMQPError) as exc:
            raise BrokerUnreachable(str(exc) or type(exc).__name__) from None
        try:
            return await work(await connection.channel())
        except AMQPError as exc:
            raise BrokerRefused(str(exc) or type(exc).__name__) from None
        finally:
            await connection.close()

    async def _provision_principal(
        self, name: str, grant: Grant, password: str | None, rotate: bool
    ) -> Provisioned:
        done = await self._provision(name, grant, password=password, rotate=rotate)
        self.tell(UserProvisioned(done, "principal"))
        return done

    async def _provision(
        self,
        username: str,
        grant: Grant,
        *,
        password: str | None = None,
        rotate: bool = False,
        what: str | None = None,
    ) -> Provisioned:
        """``Provisioner.ensure``, with what changed kept in the access record (``what``
        names a user of the backbone's own there)."""
        try:
            done = await asyncio.to_thread(
                self.provisioner.ensure, username, grant, password=password, rotate=rotate
            )
        except ManagementError as exc:
            raise Unfinished(
                f"broker access for {username} not provisioned: {exc}; the registry keeps what "
                "was done, run the same command again once the broker answers"
            ) from None
        if done.changes:
            action = (
                "provisioned"
                if done.created
                else "password-rotated"
                if "password set" in done.changes
                else "reconciled"
            )
            detail = ", ".join(done.changes) + (f" ({what})" if what else "")
            await self.registry.record_access(username, action, detail, actor=self.actor)
        return done

    async def _revoke(self, username: str, queue: str) -> None:
        try:
            revoked = await asyncio.to_thread(self.provisioner.revoke, username)
        except ManagementError as exc:
            raise Unfinished(
                f"broker access of {username} not revoked: {exc}; it is deactivated in the "
                "registry (the validator refuses it), run the same command again once the "
                "broker answers"
            ) from None
        event = RevokedUser(revoked, queue, await self.waiting(queue))
        self.tell(event)
        await self.registry.record_access(username, "revoked", event.detail, actor=self.actor)

    async def _has_user(self, username: str) -> bool | None:
        """Does the broker have this user? None when the management API cannot say."""
        try:
            return await asyncio.to_thread(self.mgmt.user, username) is not None
        except ManagementError:
            return None

    async def _still_granted(self, username: str) -> bool:
        """Does the broker still give ``username`` anything on the virtual host? (True when
        it cannot say: then the revocation is tried, and says why it failed.)"""
        try:
            vhost = self.provisioner.vhost
            return await asyncio.to_thread(self.mgmt.permissions, vhost, username) is not None
        except ManagementError:
            return True


def _not_routed(why: str) -> str:
    return (
        f"inboxes not declared and bound, the broker is unreachable ({why}); "
        "run `backbone init` once it is up"
    )


def _count(count: int, noun: str) -> str:
    """``1 open connection``, ``2 messages`` (the CLI's ``plural`` for these regular nouns)."""
    return f"{count:,} {noun if count == 1 else noun + 's'}"
