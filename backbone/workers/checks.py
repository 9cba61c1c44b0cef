"""The validator's checks of one submission, in the order of DESIGN.md.

1. size within the limit; ``user_id`` present and a known principal
2. safe parse                         3. structure and semantic rules
4. the sender is an agency the principal may act for (and is the routing key)
5. signature: valid, trusted, not revoked, bound to the sender (statuses: if configured)
7. every recipient registered and active
6. not a duplicate of an accepted DocumentId (a redelivery of the same submission is fine)

Recipients come before the acceptance record, so that a package refused for an unknown
recipient does not use up its DocumentId. Each check is a small step over a plain
:class:`Submission`; the first that fails raises :class:`Rejection`, naming the check, the
element and the value.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ParamSpec, TypeVar

from lxml import etree

from .. import edxml, signing
from ..broker.transport import Incoming
from ..config import Settings
from ..edxml.paths import DOCUMENT_ID, RECIPIENTS, SENDER
from ..errors import ErrorCode, InvalidPackage, Issue, PackageError, SignatureError
from ..registry import Registry
from ..safe import printable
from ..store import repository as repo
from .acceptances import Acceptances

# below this many bytes a package is parsed and verified on the event loop: a thread's
# handoff (a pool queue, a self-pipe wake-up, a callback) costs more than an 8 KB
# package's work, and above it the loop keeps serving the other messages meanwhile
INLINE_BELOW = 64 * 1024
P = ParamSpec("P")
T = TypeVar("T")


async def _off_loop(size: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work`` here if the package is small, else in a thread."""
    if size < INLINE_BELOW:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


class Check(StrEnum):
    SIZE = "1-size"
    PRINCIPAL = "1-principal"
    PARSE = "2-parse"
    STRUCTURE = "3-structure"
    SENDER = "4-sender"
    SIGNATURE = "5-signature"
    DUPLICATE = "6-duplicate"
    RECIPIENTS = "7-recipients"


class Rejection(Exception):
    """A check failed: the submission is refused, never routed. (Control flow inside the
    validator, never raised to a caller.)"""

    def __init__(self, check: Check, issue: Issue, package: edxml.Package | None = None) -> None:
        super().__init__(f"{check}: {issue}")
        self.check = check
        self.issue = issue
        self.package = package


@dataclass(frozen=True, slots=True)
class Submission:
    """What the checks read of a message on ``backbone.validate``."""

    body: bytes
    user_id: str | None
    routing_key: str
    message_id: str | None
    type: str | None

    @classmethod
    def of(cls, message: Incoming) -> Submission:
        return cls(
            message.body,
            message.user_id,
            message.routing_key or "",
            message.message_id,
            message.type,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    package: edxml.Package
    verified: signing.Verified | None
    backbone_id: str | None  # documents only


def _refuse(
    check: Check,
    code: ErrorCode,
    path: str,
    message: str,
    value: str | None = None,
    package: edxml.Package | None = None,
) -> Rejection:
    return Rejection(check, Issue.of(code, path, message, value), package)


class Checks:
    """The checks, with what they consult: the registry, the trust store, the binding of
    certificates to agencies, and the acceptance records."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        verifier: signing.Verifier,
        acceptances: Acceptances,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.registry = registry
        self.verifier = verifier
        self.acceptances = acceptances
        self.binding = signing.CertificateBinding(
            settings.cert_binding, settings.cert_agency_attribute, registry.is_bound
        )

    async def __call__(self, submission: Submission) -> Accepted:
        """Every check in order; the accepted package, or a :class:`Rejection`."""
        self.size(submission, submission.type == "status")
        await self.principal(submission)
        tree, package = await self.parse(submission)
        self.recipient_count(submission, package)
        await self.sender(submission, package)
        verified = await self.signature(submission, tree, package)
        if verified is not None:
            package = verified.package  # from here on, only what the signature covers
        if isinstance(package, edxml.StatusPackage):
            return Accepted(package, verified, None)
        await self.recipients(package)
        backbone_id = await self.unique(submission, package)
        return Accepted(package, verified, backbone_id)

    def size(self, submission: Submission, status: bool) -> None:
        """1: statuses have a small limit of their own (they travel in events)."""
        size = len(submission.body)
        limit = self.settings.max_status_bytes if status else self.limits.max_package_bytes
        if size > limit:
            what = "status" if status else "package"
            raise _refuse(
                Check.SIZE,
                ErrorCode.TOO_LARGE,
                "",
                f"the {what} is {size} bytes, over the limit of {limit}",
            )

    async def principal(self, submission: Submission) -> None:
        """1: before any parse, an unknown or inactive principal costs one cached lookup."""
        user = submission.user_id
        if not user:
            raise _refuse(
                Check.PRINCIPAL,
                ErrorCode.MISSING_USER_ID,
                "",
                "the message has no user_id property naming the sending principal",
            )
        if not await self.registry.may_act_for(user, submission.routing_key):
            raise _refuse(
                Check.PRINCIPAL,
                ErrorCode.PRINCIPAL_NOT_ALLOWED,
                "",
                f"principal {printable(user, 64)!r} is not a registered, active principal "
                "that may send as this routing key",
                printable(submission.routing_key, 64),
            )

    async def parse(self, submission: Submission) -> tuple[etree._Element, edxml.Package]:
        """2 and 3; CPU-heavy for a large package, so then in a thread."""
        try:
            return await _off_loop(
                len(submission.body), edxml.load_tree, submission.body, self.limits
            )
        except InvalidPackage as exc:
            raise Rejection(Check.STRUCTURE, exc.issues[0]) from None
        except PackageError as exc:
            raise Rejection(Check.PARSE, exc.issues[0]) from None

    def recipient_count(self, submission: Submission, package: edxml.Package) -> None:
        """1 again for a status published as another type; 7's bound on recipients."""
        if isinstance(package, edxml.StatusPackage):
            self.size(submission, True)
        elif len(package.recipients) > self.settings.max_recipients:
            raise _refuse(
                Check.RECIPIENTS,
                ErrorCode.TOO_MANY_RECIPIENTS,
                RECIPIENTS,
                f"the package names {len(package.recipients)} recipients, over the "
                f"limit of {self.settings.max_recipients}",
                package=package,
            )

    async def sender(self, submission: Submission, package: edxml.Package) -> None:
        """4: the package's sender is the routing key, and the principal acts for it."""
        sender = package.sender or ""
        if sender != submission.routing_key:
            raise _refuse(
                Check.SENDER,
                ErrorCode.SENDER_MISMATCH,
                SENDER,
                f"the package was published with routing key "
                f"{submission.routing_key!r}, not its sender",
                sender,
                package,
            )
        if not await self.registry.may_act_for(submission.user_id or "", sender):
            raise _refuse(
                Check.SENDER,
                ErrorCode.SENDER_NOT_ALLOWED,
                SENDER,
                f"principal {submission.user_id!r} may not act for this agency "
                "(or it is not registered and active)",
                sender,
                package,
            )

    async def signature(
        self, submission: Submission, tree: etree._Element, package: edxml.Package
    ) -> signing.Verified | None:
        """5: None for an unsigned status where status signatures are optional."""
        try:
            verified = await _off_loop(
                len(submission.body), self.verifier.verify, submission.body, parsed=(tree, package)
            )
        except SignatureError as exc:
            unsigned_status = (
                exc.code == ErrorCode.UNSIGNED
                and isinstance(package, edxml.StatusPackage)
                and self.settings.status_signature == "optional"
            )
            if unsigned_status:
                return None
            raise Rejection(Check.SIGNATURE, exc.issues[0], package) from None
        except PackageError as exc:  # what the signature covers, read again, is refused
            raise Rejection(Check.PARSE, exc.issues[0], package) from None
        if not await self.binding.binds(verified, verified.package.sender or ""):
            raise Rejection(Check.SIGNATURE, signing.wrong_agency(verified).issues[0], package)
        return verified

    async def recipients(self, package: edxml.DocumentPackage) -> None:
        """7: every recipient registered and active."""
        for index, recipient in enumerate(package.recipients):
            if not await self.registry.is_active(recipient or ""):
                position = f"[{index + 1}]" if len(package.recipients) > 1 else ""
                raise _refuse(
                    Check.RECIPIENTS,
                    ErrorCode.UNKNOWN_RECIPIENT,
                    f"{RECIPIENTS}{position}/OrganId",
                    "the recipient is not a registered, active agency",
                    recipient,
                    package,
                )

    async def unique(self, submission: Submission, package: edxml.DocumentPackage) -> str:
        """6: the DocumentId recorded for its sender (group-committed); the backbone id."""
        record = await self.acceptances.record(
            repo.Submission(
                package.sender or "",
                package.document_id,
                hashlib.sha256(submission.body).hexdigest(),
                len(submission.body),
                repo.document_facts(package),
            )
        )
        if record.outcome is repo.Acceptance.DUPLICATE:
            raise _refuse(
                Check.DUPLICATE,
                ErrorCode.DUPLICATE,
                DOCUMENT_ID,
                "this sender already had another package accepted "
                f"under this DocumentId (backbone id {record.backbone_id})",
                package.document_id,
                package,
            )
        return record.backbone_id
