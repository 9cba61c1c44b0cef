"""Whether a verified certificate belongs to the agency a package claims to come from.

Two ways, combinable: the certificate's fingerprint is registered for the agency (the
registry holds several per agency, for rotation), or the agency identifier stands in a
configured attribute of the certificate subject (how a government CA can vouch for it).
:class:`CertificateBinding` is the validator's rule, one of the two or either, with the
registry asked asynchronously; the other bindings answer at once, for the Verifier.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

if TYPE_CHECKING:
    from .verify import Verified

Mode = Literal["registry", "subject", "either"]

_ATTRIBUTES = {
    "UID": NameOID.USER_ID,
    "CN": NameOID.COMMON_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}


class Binding(Protocol):
    """Answers: may this certificate sign for this agency?"""

    def binds(self, certificate: x509.Certificate, fingerprint: str, agency: str) -> bool: ...


class FingerprintBinding:
    """Certificates registered per agency, by SHA-256 fingerprint (hex)."""

    def __init__(self, registered: Mapping[str, Iterable[str]]) -> None:
        self._registered = {agency: {f.lower() for f in fps} for agency, fps in registered.items()}

    def binds(self, certificate: x509.Certificate, fingerprint: str, agency: str) -> bool:
        return fingerprint in self._registered.get(agency, ())


class SubjectBinding:
    """The agency identifier stands in a subject attribute (UID by default)."""

    def __init__(self, attribute: str = "UID") -> None:
        self.oid = attribute_oid(attribute)
        # by fingerprint, of trusted certificates only; thread-safe without a lock: one
        # get and one set, and any thread computes the same value
        self._values: dict[str, frozenset[str | bytes]] = {}

    def binds(self, certificate: x509.Certificate, fingerprint: str, agency: str) -> bool:
        values = self._values.get(fingerprint)
        if values is None:
            found = certificate.subject.get_attributes_for_oid(self.oid)
            values = self._values[fingerprint] = frozenset(a.value for a in found)
        return agency in values


class AnyBinding:
    """Bound if any of the given bindings says so."""

    def __init__(self, *bindings: Binding) -> None:
        self.bindings = bindings

    def binds(self, certificate: x509.Certificate, fingerprint: str, agency: str) -> bool:
        return any(b.binds(certificate, fingerprint, agency) for b in self.bindings)


class CertificateBinding:
    """May the certificate of a verified signature sign for ``agency``? By ``mode``:

    - ``"registry"``: only if ``registry(fingerprint, agency)`` says the fingerprint is
      registered for the agency (the Registry's ``is_bound``: not revoked, in validity);
      the subject is not looked at.
    - ``"subject"``: only if the agency identifier stands in the subject attribute of
      ``subject``; the registry is not asked.
    - ``"either"``: if either says so; the registry is asked first, the subject only
      when the registry says no.
    """

    def __init__(
        self,
        mode: Mode,
        subject: SubjectBinding | str,
        registry: Callable[[str, str], Awaitable[bool]],
    ) -> None:
        if mode not in get_args(Mode):
            raise ValueError(f"unknown certificate binding {mode!r}: use one of {get_args(Mode)}")
        self.mode = mode
        self.subject = SubjectBinding(subject) if isinstance(subject, str) else subject
        self.registry = registry

    async def binds(self, verified: Verified, agency: str) -> bool:
        if self.mode != "subject" and await self.registry(verified.fingerprint, agency):
            return True
        return self.mode != "registry" and self.subject.binds(
            verified.certificate, verified.fingerprint, agency
        )


def attribute_oid(attribute: str) -> ObjectIdentifier:
    """A subject attribute by short name (UID, CN, OU, O, serialNumber) or dotted OID."""
    known = _ATTRIBUTES.get(attribute.upper())
    if known is not None:
        return known
    try:
        return ObjectIdentifier(attribute)
    except ValueError:
        raise ValueError(
            f"unknown certificate subject attribute {attribute!r}: use one of "
            f"{', '.join(_ATTRIBUTES)} or a dotted OID"
        ) from None
