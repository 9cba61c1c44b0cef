"""The gateway SDK: send signed packages, receive deliveries, answer with statuses.

    async with AsyncGateway(url, username="000.00.00.G22", key=key, certificates=chain) as gw:
        document_id = await gw.send(package)            # signed, published, confirmed
        async for delivery in gw.receive(topology.inbox("000.00.00.G22"), timeout=5):
            ...                                         # status 01 was already sent
            await delivery.ack()

``Gateway`` is the same on pika, synchronous, for simple integrations. Redelivered copies
of a document already handled (same backbone id) are acknowledged and dropped, so the
application sees each document (and each status) once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection, DeliveryMode
from aio_pika.connection import make_url
from cryptography import x509
from pika.adapters.blocking_connection import BlockingChannel

from . import edxml, signing
from .broker import topology
from .edxml.factory import new_status
from .errors import BackboneError
from .logs import get_logger
from .signing.pki import PrivateKey

log = get_logger("backbone.client")
_SEEN = 100_000  # backbone ids remembered for dropping redelivered copies
RECEIVE_PREFETCH = 32  # deliveries a receive() holds unacknowledged


class SendError(BackboneError):
    """A package could not be published (not confirmed by the broker)."""


@dataclass
class Delivery:
    """One message from an inbox: the package, the backbone's headers, and how to settle it."""

    body: bytes
    package: edxml.Package
    headers: dict[str, Any]
    recipient: str  # the routing key: whose inbox copy this is
    redelivered: bool
    _settle: Any = field(repr=False)

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
        key: PrivateKey | None = None,
        certificates: Sequence[x509.Certificate] = (),
        verifier: signing.Verifier | None = None,
        auto_arrived: bool = True,
        limits: edxml.Limits = edxml.DEFAULT_LIMITS,
    ) -> None:
        self.username = username
        self.key = key
        self.certificates = list(certificates)
        self.verifier = verifier
        self.auto_arrived = auto_arrived
        self.limits = limits
        self._seen = _Seen()

    def _prepare(self, package: edxml.Package | bytes) -> tuple[str, bytes, dict[str, Any], str]:
        """(routing key, body, properties, document id) of a package to submit."""
        signs = self.key is not None and bool(self.certificates)
        if isinstance(package, bytes):
            model = edxml.parse(package, self.limits)
            body = self._sign(package) if signs and b"xmldsig#" not in package else package
        else:
            model = package
            # without a key, unsigned: the backbone refuses it unless it is a status and
            # status signatures are optional there
            body = self._sign(package) if signs else edxml.build(package)
        properties = {
            "user_id": self.username,
            "message_id": uuid.uuid4().hex,
            "type": model.kind,
            "content_type": "application/xml",
            "timestamp": datetime.now(UTC),
        }
        return model.sender or "", body, properties, model.document_id or ""

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


class AsyncGateway(_Common):
    """The SDK on aio-pika. Use as an async context manager."""

    def __init__(self, url: str, *, connect_timeout: float = 30.0, **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        self.connect_timeout = connect_timeout
        self._connection: AbstractRobustConnection | None = None

    async def __aenter__(self) -> AsyncGateway:
        """Connect, or raise within ``connect_timeout`` seconds (TimeoutError): a robust
        connection retries forever what it cannot tell from a network fault (a malformed
        URL), and a black-holed host never answers."""
        connection = aio_pika.RobustConnection(make_url(self.url))
        try:
            await asyncio.wait_for(
                connection.connect(timeout=self.connect_timeout), self.connect_timeout
            )
            self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._submit = await self._channel.get_exchange(topology.SUBMIT, ensure=False)
        except BaseException:
            await connection.close()  # stops its reconnection task too
            raise
        self._connection = connection
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def send(self, package: edxml.Package | bytes) -> str:
        """Sign (if needed), publish with confirms, and return the DocumentId."""
        routing_key, body, properties, document_id = self._prepare(package)
        message = aio_pika.Message(body, delivery_mode=DeliveryMode.PERSISTENT, **properties)
        try:
            await self._submit.publish(message, routing_key=routing_key, mandatory=True)
        except aio_pika.exceptions.AMQPError as exc:
            raise SendError(f"the broker did not take {document_id!r}: {exc}") from exc
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
        channel = await self._connection.channel()  # type: ignore[union-attr]
        await channel.set_qos(prefetch_count=RECEIVE_PREFETCH)
        inbox = await channel.get_queue(queue, ensure=False)
        yielded = 0
        async with inbox.iterator(timeout=timeout) as messages:
            try:
                async for message in messages:
                    delivery = await self._deliver(message)
                    if delivery is None:
                        continue
                    yield delivery
                    yielded += 1
                    if count is not None and yielded >= count:
                        return
            except TimeoutError:
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
        the delivery goes back to the queue (past the delivery limit, to the quarantine)."""
        channel = await self._connection.channel(  # type: ignore[union-attr]
            publisher_confirms=True, on_return_raises=True
        )
        await channel.set_qos(prefetch_count=prefetch)
        inbox = await channel.get_queue(queue, ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                delivery = await self._deliver(message)
                if delivery is not None:
                    await handler(delivery)
                    await delivery.ack()
            except Exception:
                log.exception("delivery not handled; returned to the queue", queue=queue)
                await message.nack(requeue=True)

        tag = await inbox.consume(on_message)
        try:
            await stop.wait()
        finally:
            await inbox.cancel(tag)
            await channel.close()

    async def _deliver(self, message: AbstractIncomingMessage) -> Delivery | None:
        headers = dict(message.headers or {})
        recipient = message.routing_key or ""
        if self._is_copy(message.message_id):
            await message.ack()
            return None
        package = self._read(message.body)

        async def settle(ack: bool, requeue: bool = False) -> None:
            if ack:
                await message.ack()
                self._handled(message.message_id)
            else:
                await message.reject(requeue=requeue)

        delivery = Delivery(
            message.body, package, headers, recipient, bool(message.redelivered), settle
        )
        if self.auto_arrived and isinstance(package, edxml.DocumentPackage):
            await self.send_status(delivery, "01", "Đã đến")
        return delivery


class Gateway(_Common):
    """The SDK on pika, synchronous. Use as a context manager."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(**options)
        self.url = url

    def __enter__(self) -> Gateway:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel: BlockingChannel = self._connection.channel()
        self._channel.confirm_delivery()
        return self

    def __exit__(self, *_: object) -> None:
        if self._connection.is_open:
            self._connection.close()

    def send(self, package: edxml.Package | bytes) -> str:
        routing_key, body, properties, document_id = self._prepare(package)
        properties["timestamp"] = int(properties["timestamp"].timestamp())
        try:
            self._channel.basic_publish(
                topology.SUBMIT,
                routing_key,
                body,
                pika.BasicProperties(delivery_mode=2, **properties),
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise SendError(f"the broker did not take {document_id!r}: {exc}") from exc
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
        self.send(self._status(reporter, document, code, description, staff))

    def receive(
        self, queue: str, *, timeout: float = 5.0, count: int | None = None
    ) -> Iterator[Delivery]:
        yielded = 0
        for method, properties, body in self._channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            headers = dict(properties.headers or {})
            if self._is_copy(properties.message_id):
                self._channel.basic_ack(method.delivery_tag)
                continue
            tag, message_id = method.delivery_tag, properties.message_id

            def settle(
                ack: bool,
                requeue: bool = False,
                tag: int = tag,
                message_id: str | None = message_id,
            ) -> None:
                if ack:
                    self._channel.basic_ack(tag)
                    self._handled(message_id)
                else:
                    self._channel.basic_reject(tag, requeue=requeue)

            delivery = Delivery(
                body, self._read(body), headers, method.routing_key, method.redelivered, settle
            )
            if self.auto_arrived and isinstance(delivery.package, edxml.DocumentPackage):
                self.send_status(delivery, "01", "Đã đến")
            yield delivery
            yielded += 1
            if count is not None and yielded >= count:
                break
        self._channel.cancel()
