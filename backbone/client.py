"""The gateway SDK: send signed packages, receive deliveries, answer with statuses.

    async with AsyncGateway(url, username="000.00.00.G22", key=key, certificates=chain) as gw:
        document_id = await gw.send(package)            # signed, published, confirmed
        async for delivery in gw.receive(topology.inbox("000.00.00.G22"), timeout=5):
            ...                                         # status 01 was already sent
            await delivery.ack()

``AsyncGateway`` reaches the broker through a :class:`~backbone.broker.transport.Transport`,
as an httpx client does through its transport: aio-pika's by default, or any other, such as
:class:`backbone.testing.MemoryBroker`'s for tests without a broker
(``AsyncGateway(username=code, transport=broker.transport(code))``). ``Gateway`` is the same
on pika, synchronous, for simple integrations. Redelivered copies of a document already
handled (same message id) are acknowledged and dropped, so the application sees each
document (and each status) once.

Errors are the backbone's: :class:`SendError` for a package not signed or not taken by the
broker, :class:`~backbone.errors.BrokerError` (``BrokerUnreachable``, ``BrokerRefused``)
for the rest of what the broker does, :class:`~backbone.errors.PackageError` for a delivery
that is not a valid package.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import pika
from cryptography import x509
from pika.adapters.blocking_connection import BlockingChannel

from . import edxml, signing
from .broker import topology
from .broker.acks import Acks
from .broker.amqp import AmqpTransport
from .broker.transport import Connection, Incoming, Outgoing, Transport
from .edxml.factory import new_status
from .errors import BackboneError, BrokerError, BrokerRefused, BrokerUnreachable
from .logs import get_logger
from .signing.pki import PrivateKey

log = get_logger("backbone.client")
_SEEN = 100_000  # message ids remembered for dropping redelivered copies
RECEIVE_PREFETCH = 32  # deliveries a receive() holds unacknowledged
CONNECT_TIMEOUT = 30.0  # seconds AsyncGateway's default transport waits for the broker
PIKA_CONNECT_TIMEOUT = 15.0  # seconds Gateway waits (pika's own bound on bringing a connection up)


class SendError(BackboneError):
    """A package could not be published: not signed, or not taken by the broker (refused,
    returned unroutable, or not confirmed)."""


@dataclass
class Delivery:
    """One message from an inbox: the package, the backbone's headers, and how to settle it."""

    body: bytes
    package: edxml.Package
    headers: dict[str, Any]
    recipient: str  # the routing key: whose inbox copy this is
    redelivered: bool
    _settle: Callable[..., Any] = field(repr=False)

    def ack(self) -> Any:
        """Settle it as handled (``await`` it with AsyncGateway)."""
        return self._settle(True)

    def reject(self, requeue: bool = False) -> Any:
        """Give it back (``requeue``) or drop it (``await`` it with AsyncGateway)."""
        return self._settle(False, requeue)

    @property
    def backbone_id(self) -> str | None:
        value = self.headers.get("x-backbone-id")
        return str(value) if value is not None else None

    @property
    def kind(self) -> str:
        return self.package.kind

    @property
    def rejection(self) -> dict[str, str] | None:
        """For a rejection status from the backbone: which check failed, on what."""
        if "x-rejection-check" not in self.headers:
            return None
        return {
            k.removeprefix("x-rejection-"): str(v)
            for k, v in self.headers.items()
            if k.startswith("x-rejection-")
        }


class _Seen:
    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        if len(self._ids) > _SEEN:
            self._ids.popitem(last=False)


class _Common:
    """What both SDKs share: preparing what to publish, and reading what arrives."""

    def __init__(
        self,
        *,
        username: str,
        key: PrivateKey | None,
        certificates: Sequence[x509.Certificate],
        verifier: signing.Verifier | None,
        auto_arrived: bool,
        limits: edxml.Limits,
    ) -> None:
        self.username = username
        self.key = key
        self.certificates = list(certificates)
        self.verifier = verifier
        self.auto_arrived = auto_arrived
        self.limits = limits
        self._seen = _Seen()

    def _prepare(
        self, package: edxml.Package | bytes, message_id: str | None = None
    ) -> tuple[Outgoing, str]:
        """The message that submits a package (a new message id unless given), and its
        document id."""
        signs = self.key is not None and bool(self.certificates)
        if isinstance(package, bytes):
            model = edxml.parse(package, self.limits)
            body = self._sign(package) if signs and b"xmldsig#" not in package else package
        else:
            model = package
            # without a key, unsigned: the backbone refuses it unless it is a status and
            # status signatures are optional there
            body = self._sign(package) if signs else edxml.build(package)
        message = Outgoing(
            body,
            model.sender or "",
            message_id=message_id or uuid.uuid4().hex,
            type=model.kind,
            user_id=self.username,
            timestamp=datetime.now(UTC),
        )
        return message, model.document_id or ""

    def _sign(self, package: edxml.Package | bytes) -> bytes:
        if self.key is None or not self.certificates:
            raise SendError("signing needs the principal's key and certificate")
        return signing.sign(package, self.key, self.certificates, limits=self.limits)

    def _status(
        self,
        reporter: str | None,
        document: Delivery | edxml.DocumentPackage | edxml.ResponseFor,
        code: str,
        description: str | None,
        staff: edxml.StaffInfo | None,
    ) -> edxml.StatusPackage:
        """The status package; the reporter is, unless given, the agency a delivery was for
        (a gateway reports for each agency it serves), else this principal."""
        if reporter is None:
            reporter = document.recipient if isinstance(document, Delivery) else self.username
        target = document.package if isinstance(document, Delivery) else document
        if not isinstance(target, edxml.DocumentPackage | edxml.ResponseFor):
            raise ValueError("a status answers a document")
        return new_status(
            reporter=reporter,
            document=target,
            status_code=code,
            description=description,
            staff=staff,
        )

    def _read(self, body: bytes) -> edxml.Package:
        if self.verifier is not None:
            return self.verifier.verify(body).package
        return edxml.parse(body, self.limits)

    def _is_copy(self, message_id: str | None) -> bool:
        """A redelivered copy of something this gateway already handled? The backbone gives
        each copy a stable message id: ``<backbone id>:<recipient>`` for a document."""
        return message_id is not None and message_id in self._seen

    def _handled(self, message_id: str | None) -> None:
        if message_id is not None:
            self._seen.add(message_id)


def _not_taken(document_id: str, why: object) -> SendError:
    return SendError(f"the broker did not take {document_id!r}: {why}")


class AsyncGateway(_Common):
    """The SDK on a broker transport. Use as an async context manager: it connects on
    entering (raising :class:`~backbone.errors.BrokerError` if it cannot) and closes the
    connection on leaving, which hands back whatever was not settled.

    ``url``: the broker, ``amqp://user:password@host/vhost``, for the default transport
    (aio-pika, waiting at most ``connect_timeout`` seconds for the broker to answer);
    ``transport``: another one instead (give one of the two).
    ``username``: the principal's broker user, stamped as ``user_id`` on what it sends
    (the broker refuses it unless it is the user connected).
    ``key`` and ``certificates``: the principal's, to sign what it sends unsigned.
    ``verifier``: to verify what arrives (else it is parsed only, within ``limits``).
    ``auto_arrived``: answer each document with status 01 before handing it over (without,
    the application answers, once it has stored it).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        username: str,
        key: PrivateKey | None = None,
        certificates: Sequence[x509.Certificate] = (),
        verifier: signing.Verifier | None = None,
        auto_arrived: bool = True,
        limits: edxml.Limits = edxml.DEFAULT_LIMITS,
        connect_timeout: float = CONNECT_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            username=username,
            key=key,
            certificates=certificates,
            verifier=verifier,
            auto_arrived=auto_arrived,
            limits=limits,
        )
        if transport is None:
            if url is None:
                raise ValueError("AsyncGateway needs the broker's url or a transport")
            transport = AmqpTransport(url, connect_timeout=connect_timeout)
        elif url is not None:
            raise ValueError("AsyncGateway takes the broker's url or a transport, not both")
        self.transport = transport
        self._connection: Connection | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        """Connect, or raise BrokerUnreachable (within ``connect_timeout`` seconds on
        aio-pika, a bad login or a host that never answers included)."""
        self._connection = await self._stack.enter_async_context(self.transport.connect())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._connection = None
        await self._stack.aclose()

    @property
    def _connected(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the gateway is not connected: use it in `async with`")
        return self._connection

    async def send(self, package: edxml.Package | bytes, *, message_id: str | None = None) -> str:
        """Sign (if needed), publish with confirms, and return the DocumentId. A retry that
        gives the same ``message_id`` lets the backbone tell it is the same submission."""
        message, document_id = self._prepare(package, message_id)
        try:
            routed = await self._connected.publish(topology.SUBMIT, message, mandatory=True)
        except BrokerError as exc:
            raise _not_taken(document_id, exc) from exc
        if not routed:
            raise _not_taken(document_id, f"returned, {topology.SUBMIT} routed it to no queue")
        return document_id

    async def send_status(
        self,
        document: Delivery | edxml.DocumentPackage | edxml.ResponseFor,
        code: str,
        description: str | None = None,
        staff: edxml.StaffInfo | None = None,
        *,
        reporter: str | None = None,
    ) -> None:
        """Report a status (01 arrived ... 06 done, 02 refused, 13/15/16 recall)."""
        await self.send(self._status(reporter, document, code, description, staff))

    async def receive(
        self, queue: str, *, timeout: float | None = None, count: int | None = None
    ) -> AsyncGenerator[Delivery, None]:
        """Deliveries from ``queue`` until ``count`` were yielded or ``timeout`` seconds pass
        without one. With ``auto_arrived``, documents are answered with status 01 before
        they are yielded; without, the caller answers (once it has stored them). At most
        RECEIVE_PREFETCH are held unacknowledged at once."""
        messages = self._connected.messages(queue, prefetch=RECEIVE_PREFETCH, timeout=timeout)
        yielded = 0
        async with aclosing(messages):
            async for message in messages:
                delivery = await self._deliver(message)
                if delivery is None:
                    continue
                yield delivery
                yielded += 1
                if count is not None and yielded >= count:
                    return

    async def serve(
        self,
        queue: str,
        handler: Callable[[Delivery], Awaitable[None]],
        *,
        stop: asyncio.Event,
        prefetch: int = 64,
    ) -> None:
        """Handle deliveries from ``queue`` until ``stop`` is set, up to ``prefetch`` at once:
        for throughput, where ``receive`` handles one at a time. Each document is answered
        with status 01, then given to ``handler``, and acked when it returns; if it raises,
        the delivery goes back to the queue (past the delivery limit, to the quarantine).
        Acks are coalesced where the order allows (:class:`~backbone.broker.acks.Acks`)."""
        acks = Acks()
        acks.fit(prefetch)

        async def on_message(message: Incoming) -> None:
            acks.arrived(message)
            try:
                delivery = await self._deliver(message, acks)
                if delivery is not None:
                    await handler(delivery)
                    await delivery.ack()
            except Exception:
                log.exception("delivery not handled; returned to the queue", queue=queue)
                await acks.handed_back(message, requeue=True)

        consumer = await self._connected.consume(queue, on_message, prefetch=prefetch)
        try:
            await stop.wait()
        finally:
            await consumer.cancel()

    async def _deliver(self, message: Incoming, acks: Acks | None = None) -> Delivery | None:
        """The delivery of ``message``, or None for a copy already handled (acked); its
        acks go through ``acks`` if given."""

        async def ack() -> None:
            await (message.ack() if acks is None else acks.done(message))

        if self._is_copy(message.message_id):
            await ack()
            return None
        package = self._read(message.body)

        async def settle(ack_it: bool, requeue: bool = False) -> None:
            if ack_it:
                await ack()
                self._handled(message.message_id)
            elif acks is None:
                await message.reject(requeue=requeue)
            else:
                await acks.handed_back(message, requeue=requeue)

        delivery = Delivery(
            message.body,
            package,
            dict(message.headers),
            message.routing_key or "",
            message.redelivered,
            settle,
        )
        if self.auto_arrived and isinstance(package, edxml.DocumentPackage):
            await self.send_status(delivery, "01", "Đã đến")
        return delivery


@contextmanager
def _pika_errors(what: str) -> Iterator[None]:
    """pika's errors as ours: a connection that fails or is lost is unreachable, the rest
    (a channel closed by a refusal: no such queue, not ours to read) refused."""
    try:
        yield
    except (pika.exceptions.AMQPConnectionError, OSError) as exc:
        raise BrokerUnreachable(f"{what}: {str(exc) or type(exc).__name__}") from exc
    except pika.exceptions.AMQPError as exc:
        raise BrokerRefused(f"{what}: {str(exc) or type(exc).__name__}") from exc


class Gateway(_Common):
    """The SDK on pika, synchronous. Use as a context manager. Its parameters are
    AsyncGateway's, ``url`` required and no ``transport``; ``connect_timeout`` bounds
    bringing the connection up (TCP, TLS, AMQP)."""

    def __init__(
        self,
        url: str,
        *,
        username: str,
        key: PrivateKey | None = None,
        certificates: Sequence[x509.Certificate] = (),
        verifier: signing.Verifier | None = None,
        auto_arrived: bool = True,
        limits: edxml.Limits = edxml.DEFAULT_LIMITS,
        connect_timeout: float = PIKA_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(
            username=username,
            key=key,
            certificates=certificates,
            verifier=verifier,
            auto_arrived=auto_arrived,
            limits=limits,
        )
        self.url = url
        self.connect_timeout = connect_timeout

    def __enter__(self) -> Self:
        parameters = pika.URLParameters(self.url)
        parameters.stack_timeout = self.connect_timeout
        with _pika_errors("connect"):
            self._connection = pika.BlockingConnection(parameters)
            try:
                self._channel: BlockingChannel = self._connection.channel()
                self._channel.confirm_delivery()
            except BaseException:
                self._connection.close()
                raise
        return self

    def __exit__(self, *_: object) -> None:
        if self._connection.is_open:
            with _pika_errors("close"):
                self._connection.close()

    def send(self, package: edxml.Package | bytes) -> str:
        """Sign (if needed), publish with confirms, and return the DocumentId."""
        message, document_id = self._prepare(package)
        properties = pika.BasicProperties(
            delivery_mode=2,
            message_id=message.message_id,
            type=message.type,
            user_id=message.user_id,
            content_type=message.content_type,
            timestamp=int(message.timestamp.timestamp()) if message.timestamp else None,
        )
        try:
            self._channel.basic_publish(
                topology.SUBMIT, message.routing_key, message.body, properties, mandatory=True
            )
        except (pika.exceptions.AMQPError, OSError) as exc:  # returned, nacked, refused, lost
            raise _not_taken(document_id, exc) from exc
        return document_id

    def send_status(
        self,
        document: Delivery | edxml.DocumentPackage | edxml.ResponseFor,
        code: str,
        description: str | None = None,
        staff: edxml.StaffInfo | None = None,
        *,
        reporter: str | None = None,
    ) -> None:
        """Report a status (01 arrived ... 06 done, 02 refused, 13/15/16 recall)."""
        self.send(self._status(reporter, document, code, description, staff))

    def receive(
        self, queue: str, *, timeout: float = 5.0, count: int | None = None
    ) -> Iterator[Delivery]:
        """As AsyncGateway's: deliveries until ``count`` or ``timeout`` idle seconds."""
        yielded = 0
        with _pika_errors(f"consume {queue}"):
            for method, properties, body in self._channel.consume(
                queue, inactivity_timeout=timeout
            ):
                if method is None:
                    break
                if self._is_copy(properties.message_id):
                    self._channel.basic_ack(method.delivery_tag)
                    continue
                delivery = Delivery(
                    body,
                    self._read(body),
                    dict(properties.headers or {}),
                    method.routing_key,
                    method.redelivered,
                    self._settler(method.delivery_tag, properties.message_id),
                )
                if self.auto_arrived and isinstance(delivery.package, edxml.DocumentPackage):
                    self.send_status(delivery, "01", "Đã đến")
                yield delivery
                yielded += 1
                if count is not None and yielded >= count:
                    break
            self._channel.cancel()

    def _settler(self, tag: int, message_id: str | None) -> Callable[..., None]:
        def settle(ack: bool, requeue: bool = False) -> None:
            with _pika_errors("ack" if ack else "reject"):
                if ack:
                    self._channel.basic_ack(tag)
                else:
                    self._channel.basic_reject(tag, requeue=requeue)
            if ack:
                self._handled(message_id)

        return settle
