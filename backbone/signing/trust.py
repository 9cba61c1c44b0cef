"""Trust anchors, certificate chains and revocation.

The anchors come from a configured CA bundle only (never the public web roots). A chain
is validated by cryptography's X.509 path builder; since thousands of packages arrive
signed by the same few hundred certificates, a validated chain is remembered by the
fingerprints of its certificates. What can change between two packages is checked on
every use, cache or not: the validity period against the clock, and revocation against
the CRLs. A new CA bundle means a new TrustStore. CRL files are looked at again at most
every ``refresh_seconds`` (their modification time and size) and whenever a CRL's
nextUpdate has passed, so `backbone pki revoke` reaches running validators; a file that
cannot be read at that moment (half written) leaves the CRLs in force until the next look.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from ..errors import ErrorCode, Issue, SignatureError, TrustConfigError
from .pki import fingerprint

Clock = Callable[[], datetime]
_CACHE_SIZE = 4096


def _utcnow() -> datetime:
    return datetime.now(UTC)


def refuse(code: str, message: str, value: str | None = None, path: str = "") -> SignatureError:
    return SignatureError(Issue.of(code, path, message, value))


def _subject(certificate: x509.Certificate) -> str:
    try:
        return certificate.subject.rfc4514_string()
    except ValueError:
        return "<unreadable subject>"


def _require_digital_signature(
    policy: verification.Policy, certificate: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is None or not usage.digital_signature:
        raise ValueError("the certificate's KeyUsage does not allow digitalSignature")


@dataclass(frozen=True, slots=True)
class TrustedChain:
    """A chain that validated: the signer's certificate first, the anchor last."""

    chain: tuple[x509.Certificate, ...]
    fingerprint: str

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


class _Crl:
    """One CRL with its revoked serials, checked against its issuer once."""

    def __init__(self, crl: x509.CertificateRevocationList, source: str) -> None:
        self.crl = crl
        self.source = source
        self.revoked = frozenset(r.serial_number for r in crl)
        self._checked_with: set[x509.Certificate] = set()

    def check_issuer(self, issuer: x509.Certificate) -> None:
        if issuer in self._checked_with:
            return
        public_key = issuer.public_key()
        if not self.crl.is_signature_valid(public_key):  # type: ignore[arg-type]
            raise refuse(
                ErrorCode.REVOCATION_UNKNOWN,
                f"the CRL {self.source} names {_subject(issuer)} as issuer but is not signed by "
                "it, so revocation cannot be established",
            )
        self._checked_with.add(issuer)


_Revocation = tuple[tuple[x509.Certificate, int, x509.Certificate, tuple[_Crl, ...]], ...]


class TrustStore:
    """Trust anchors plus CRLs; validates signer chains, remembering those that passed."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        *,
        crl_sources: Sequence[str] | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        if not anchors:
            raise TrustConfigError("the trust store has no anchors: configure a CA bundle")
        self.anchors = tuple(anchors)
        self._store = verification.Store(list(anchors))
        sources = list(crl_sources or [f"#{i + 1}" for i in range(len(crls))])
        self._crls: dict[x509.Name, list[_Crl]] = {}
        self._install(crls, sources)
        self._files: tuple[Path, ...] = ()
        self._stamps: tuple[tuple[int, int], ...] = ()
        self._refresh_seconds = 0.0
        self._next_look = 0.0
        self.clock = clock
        # per validated chain: the chain, and for each certificate but the anchor, its
        # serial, its issuer and the CRLs that issuer published (found once, not per package)
        self._cache: OrderedDict[Hashable, tuple[TrustedChain, _Revocation]] = OrderedDict()
        self._lock = threading.Lock()
        self._ee_policy = verification.ExtensionPolicy.permit_all().require_present(
            x509.KeyUsage, verification.Criticality.AGNOSTIC, _require_digital_signature
        )
        self._ca_policy = verification.ExtensionPolicy.webpki_defaults_ca()
        self._check_anchors_crls()

    def _install(
        self, crls: Sequence[x509.CertificateRevocationList], sources: Sequence[str]
    ) -> None:
        installed: dict[x509.Name, list[_Crl]] = {}
        for crl, source in zip(crls, sources, strict=True):
            installed.setdefault(crl.issuer, []).append(_Crl(crl, source))
        self._crls = installed

    def _check_anchors_crls(self) -> None:
        for anchor in self.anchors:  # fail at start-up, not on the first package
            for entry in self._crls.get(anchor.subject, []):
                try:
                    entry.check_issuer(anchor)
                except SignatureError as exc:
                    raise TrustConfigError(exc.message) from None

    @classmethod
    def from_files(
        cls,
        bundle: Path,
        crls: Sequence[Path] = (),
        *,
        clock: Clock = _utcnow,
        refresh_seconds: float = 5.0,
    ) -> TrustStore:
        """Load a PEM CA bundle and CRL files (PEM or DER); say which file is unusable.
        The CRL files are reloaded when they change (see the module's note)."""
        try:
            anchors = x509.load_pem_x509_certificates(Path(bundle).read_bytes())
        except OSError as exc:
            raise TrustConfigError(_unreadable("the CA bundle", bundle, exc)) from None
        except ValueError:  # cryptography's text points to its FAQ, not to the file
            raise TrustConfigError(
                f"cannot use the CA bundle {bundle}: not PEM certificates"
            ) from None
        files = tuple(Path(p) for p in crls)
        stamps = _stamps(files)
        store = cls(anchors, _load_crls(files), crl_sources=[str(p) for p in files], clock=clock)
        store._files, store._stamps = files, stamps
        store.refresh_every(refresh_seconds)
        return store

    def refresh_every(self, seconds: float) -> None:
        """Look at the CRL files again at most every ``seconds``."""
        self._refresh_seconds = seconds
        self._next_look = time.monotonic() + seconds

    def _refresh(self, now: datetime) -> None:
        """Reload the CRL files if they changed or one is past its nextUpdate, looking at
        most every refresh interval (an out-of-date CRL would otherwise be read again for
        every package until its replacement comes)."""
        if not self._files or time.monotonic() < self._next_look:
            return
        due = any(
            e.crl.next_update_utc is None or now > e.crl.next_update_utc
            for entries in self._crls.values()
            for e in entries
        )
        with self._lock:
            self._next_look = time.monotonic() + self._refresh_seconds
            try:
                stamps = _stamps(self._files)
                if stamps == self._stamps and not due:
                    return
                crls = _load_crls(self._files)
            except TrustConfigError:
                return  # being rewritten: the CRLs in force stay until the next look
            previous = self._crls
            self._install(crls, [str(p) for p in self._files])
            try:
                self._check_anchors_crls()
            except TrustConfigError:
                self._crls = previous
                return
            self._stamps = stamps
            self._cache.clear()  # cached chains hold the CRLs they were checked against

    def validate(
        self, certificates: Sequence[x509.Certificate], key: Hashable | None = None
    ) -> TrustedChain:
        """Validate the signer (``certificates[0]``) with the others as intermediates.

        ``key`` identifies these certificates for the cache (the verifier passes the
        base64 text it read them from); by default, their fingerprints.
        """
        now = self.clock()
        self._refresh(now)
        for certificate in certificates:
            self._check_period(certificate, now)
        key = key if key is not None else tuple(fingerprint(c) for c in certificates)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None:
            signer = certificates[0]
            usage = _key_usage(signer)
            if usage is None or not usage.digital_signature:
                raise refuse(
                    ErrorCode.BAD_KEY_USAGE,
                    "the signer's certificate does not allow digitalSignature",
                    _subject(signer),
                )
            trusted = self._build(signer, certificates[1:], now)
            revocation = tuple(
                (
                    certificate,
                    certificate.serial_number,
                    issuer,
                    tuple(self._crls.get(certificate.issuer, ())),
                )
                for certificate, issuer in itertools.pairwise(trusted.chain)
            )
            cached = (trusted, revocation)
            with self._lock:
                self._cache[key] = cached
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        trusted, revocation = cached
        for certificate in trusted.chain:
            self._check_period(certificate, now)
        self._check_revocation(revocation, now)
        return trusted

    def _build(
        self, signer: x509.Certificate, intermediates: Sequence[x509.Certificate], now: datetime
    ) -> TrustedChain:
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ee_policy=self._ee_policy, ca_policy=self._ca_policy)
            .build_client_verifier()
        )
        try:
            result = verifier.verify(signer, list(intermediates))
        except verification.VerificationError as exc:
            raise refuse(
                ErrorCode.UNTRUSTED_CHAIN,
                f"the signer's certificate does not chain to a configured trust anchor ({exc})",
                _subject(signer),
            ) from None
        return TrustedChain(tuple(result.chain), fingerprint(signer))

    @staticmethod
    def _check_period(certificate: x509.Certificate, now: datetime) -> None:
        if now < certificate.not_valid_before_utc:
            raise refuse(
                ErrorCode.NOT_YET_VALID,
                f"the certificate is not valid before {certificate.not_valid_before_utc:%F %T} UTC",
                _subject(certificate),
            )
        if now > certificate.not_valid_after_utc:
            raise refuse(
                ErrorCode.EXPIRED,
                f"the certificate expired on {certificate.not_valid_after_utc:%F %T} UTC",
                _subject(certificate),
            )

    @staticmethod
    def _check_revocation(revocation: _Revocation, now: datetime) -> None:
        """Every certificate but the anchor, against every CRL its issuer published."""
        for certificate, serial, issuer, entries in revocation:
            for entry in entries:
                entry.check_issuer(issuer)
                next_update = entry.crl.next_update_utc
                if next_update is None or now > next_update:
                    raise refuse(
                        ErrorCode.REVOCATION_UNKNOWN,
                        f"the CRL {entry.source} of {_subject(issuer)} is out of date "
                        f"(next update was due {next_update}), so revocation cannot be established",
                    )
                if serial in entry.revoked:
                    raise refuse(
                        ErrorCode.REVOKED,
                        f"the certificate (serial {serial:x}) is revoked by {entry.source}",
                        _subject(certificate),
                    )


def _stamps(files: Sequence[Path]) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((s.st_mtime_ns, s.st_size) for s in (p.stat() for p in files))
    except OSError as exc:
        raise TrustConfigError(f"cannot use the CRL {exc.filename}: {exc.strerror}") from None


def _load_crls(files: Sequence[Path]) -> list[x509.CertificateRevocationList]:
    loaded = []
    for path in files:
        try:
            raw = path.read_bytes()
            loaded.append(
                x509.load_pem_x509_crl(raw)
                if raw.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(raw)
            )
        except OSError as exc:
            raise TrustConfigError(_unreadable("the CRL", path, exc)) from None
        except ValueError:  # the ASN.1 parser's text says nothing to a user
            raise TrustConfigError(f"cannot use the CRL {path}: not a CRL (PEM or DER)") from None
    return loaded


def _unreadable(what: str, path: Path, exc: OSError) -> str:
    return f"cannot read {what} {path}: {exc.strerror or exc}"


def _key_usage(certificate: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
