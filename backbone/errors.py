"""The exceptions the backbone raises on purpose.

Every refusal of a package is a :class:`PackageError`; callers (the validator, the CLI,
adapters) catch that one type and read its machine-readable ``code``, the element
``path``, the offending ``value`` (truncated) and a human ``message``. Errors from
lxml or pydantic never leave the format layer.

Every exception below is a BackboneError, so that one ``except BackboneError`` takes what
the backbone refuses on purpose. An error several modules raise is defined here; an error
of one module's own operations is defined in that module (in brackets), beside the code
that raises it, and imported from there::

    BackboneError
     ├── PackageError            a package is refused; carries one or more Issues
     │    ├── UnsafePackage        refused before or while parsing: size, DTD, encoding
     │    ├── MalformedPackage     not well-formed XML, wrong root element or namespace
     │    ├── InvalidPackage       structure (schema, cardinality) or semantic rules
     │    └── SignatureError       unsigned, forged, altered, untrusted, revoked, wrong agency
     ├── TrustConfigError        the trust anchors or CRLs configured cannot be used
     ├── AgencyCodeError         [agency] a text is not an agency identifier (a ValueError too)
     ├── PatternError            [agency] a text is not an agency pattern (a ValueError too)
     ├── RegistryError           [registry] unknown agency, bad parent, name taken, bad CSV
     ├── PkiError                [signing.pki] the development PKI is missing or cannot do it
     ├── SendError               [client] a gateway's package was not signed or not confirmed
     ├── ManagementError         [broker.mgmt] the management API refused or did not answer
     ├── ProvisioningError       [broker.provisioning] a principal cannot be provisioned as asked
     ├── LocalNodeError          [broker.localnode] the private RabbitMQ node did not start
     ├── NameRefused             [operations] a principal may not take this name (nothing written)
     │    └── ForeignUser          [operations] a broker user the backbone did not create
     ├── DatabaseSetupError      [operations] the database cannot be created or migrated
     └── BrokerError             the broker failed us
          ├── BrokerUnreachable    it did not answer, or refused the login
          ├── BrokerRefused        it refused an operation or did not confirm a publish
          ├── BrokerNotFound       none is configured, and no rabbitmq-server to start one
          └── Unfinished           [operations] it failed part way: running the same again ends it
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BackboneError",
    "BrokerError",
    "BrokerNotFound",
    "BrokerRefused",
    "BrokerUnreachable",
    "ErrorCode",
    "InvalidPackage",
    "Issue",
    "MalformedPackage",
    "PackageError",
    "SignatureError",
    "TrustConfigError",
    "UnsafePackage",
]

VALUE_LIMIT = 80


class ErrorCode(StrEnum):
    """Machine-readable reasons a package is refused (stable: gateways match on them)."""

    TOO_LARGE = "too-large"
    NOT_UTF8 = "not-utf8"
    DTD_FORBIDDEN = "dtd-forbidden"
    MALFORMED = "malformed"
    WRONG_ROOT = "wrong-root"
    SCHEMA = "schema"
    MISSING = "missing-element"
    TOO_MANY = "too-many"
    UNEXPECTED = "unexpected-element"
    BAD_AGENCY = "bad-agency-id"
    BAD_DATE = "bad-date"
    BAD_TIMESTAMP = "bad-timestamp"
    BAD_STATUS = "bad-status-code"
    BAD_CODE = "bad-code"
    BAD_DOCUMENT_ID = "bad-document-id"
    DUPLICATE_RECIPIENT = "duplicate-recipient"
    MANIFEST_MISMATCH = "manifest-mismatch"
    DUPLICATE_CONTENT_ID = "duplicate-content-id"
    BAD_BASE64 = "bad-base64"
    ATTACHMENT_TOO_LARGE = "attachment-too-large"
    # the signing layer
    UNSIGNED = "unsigned"
    MALFORMED_SIGNATURE = "malformed-signature"
    MULTIPLE_SIGNATURES = "multiple-signatures"
    WEAK_ALGORITHM = "weak-algorithm"
    DIGEST_MISMATCH = "digest-mismatch"
    BAD_SIGNATURE = "bad-signature-value"
    UNTRUSTED_CHAIN = "untrusted-chain"
    BAD_KEY_USAGE = "bad-key-usage"
    EXPIRED = "certificate-expired"
    NOT_YET_VALID = "certificate-not-yet-valid"
    REVOKED = "certificate-revoked"
    REVOCATION_UNKNOWN = "revocation-unknown"
    WRONG_AGENCY = "wrong-agency"
    # the validator's checks of the submission and the registry
    MISSING_USER_ID = "missing-user-id"
    PRINCIPAL_NOT_ALLOWED = "principal-not-allowed"
    SENDER_MISMATCH = "sender-mismatch"
    SENDER_NOT_ALLOWED = "sender-not-allowed"
    TOO_MANY_RECIPIENTS = "too-many-recipients"
    UNKNOWN_RECIPIENT = "unknown-recipient"
    DUPLICATE = "duplicate"
    # after acceptance: the delivery and the tracker
    UNDELIVERABLE = "undeliverable"
    STATUS_REFUSED = "status-refused"


def truncate(value: str | None, limit: int = VALUE_LIMIT) -> str | None:
    """Shorten an offending value for messages and logs (a package may be megabytes)."""
    if value is None or len(value) <= limit:
        return value
    return value[:limit] + f"… ({len(value)} characters)"


@dataclass(frozen=True, slots=True)
class Issue:
    """One thing wrong with a package: what (``code``), where (``path``), which value."""

    code: str
    path: str
    message: str
    value: str | None = None
    line: int | None = None
    column: int | None = None

    @classmethod
    def of(
        cls,
        code: str,
        path: str,
        message: str,
        value: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> Issue:
        return cls(code, path, message, truncate(value), line, column)

    def __str__(self) -> str:
        where = self.path or "package"
        if self.line is not None:
            where += f" (line {self.line}" + (f", column {self.column})" if self.column else ")")
        text = f"[{self.code}] {where}: {self.message}"
        if self.value is not None:
            text += f" (value {self.value!r})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "value": self.value,
            "line": self.line,
            "column": self.column,
        }


class BackboneError(Exception):
    """Base of every exception the backbone raises deliberately."""


class PackageError(BackboneError):
    """A package is refused. The first issue is the reason; ``issues`` lists them all."""

    def __init__(self, issues: Issue | Iterable[Issue]) -> None:
        collected: Sequence[Issue] = (issues,) if isinstance(issues, Issue) else tuple(issues)
        if not collected:
            raise ValueError("a PackageError needs at least one issue")
        self.issues: tuple[Issue, ...] = tuple(collected)
        super().__init__(self._summary())

    def _summary(self) -> str:
        first = str(self.issues[0])
        more = len(self.issues) - 1
        return first if not more else f"{first} (and {more} more)"

    @property
    def code(self) -> str:
        return self.issues[0].code

    @property
    def path(self) -> str:
        return self.issues[0].path

    @property
    def value(self) -> str | None:
        return self.issues[0].value

    @property
    def message(self) -> str:
        return self.issues[0].message

    @property
    def line(self) -> int | None:
        return self.issues[0].line


class UnsafePackage(PackageError):
    """Refused before or while parsing: over the size limit, a DTD or entity, not UTF-8."""


class MalformedPackage(PackageError):
    """Not well-formed XML, or not an edXML root in the edXML namespace."""


class InvalidPackage(PackageError):
    """Well-formed edXML that breaks the schema, a cardinality or a semantic rule."""


class SignatureError(PackageError):
    """The package signature is missing, malformed, forged, weak, or not the sender's."""


class TrustConfigError(BackboneError):
    """A configured CA bundle or CRL cannot be read or is not fit to use (operator error)."""


class BrokerError(BackboneError):
    """The broker failed us: unreachable, or it refused an operation or a publish."""


class BrokerUnreachable(BrokerError):
    """The broker did not answer, or refused the login."""


class BrokerRefused(BrokerError):
    """The broker answered but refused an operation (an inequivalent declaration, a
    publish it did not confirm, a permission)."""


class BrokerNotFound(BrokerError):
    """No broker is configured (BACKBONE_AMQP_URL with BACKBONE_MGMT_URL) and none can be
    started here (rabbitmq-server is not installed): the message says what to install."""
