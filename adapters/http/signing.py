"""Request signatures: every call to the HTTP adapter is signed with its credential's secret.

Pure (no I/O, the clock passed in), like ``backbone.broker.access``: the application reads
the headers and the body, looks the secret up, and calls :func:`verify`.

A request carries four headers::

    X-Backbone-Key            the credential's id (letters, digits, ``_`` and ``-``, at most 64)
    X-Backbone-Timestamp      Unix seconds when it was signed
    X-Backbone-Nonce          a value new for each request (16 to 64 letters, digits, ``_``, ``-``)
    X-Backbone-Content-SHA256 the body's SHA-256, in lowercase hex
    X-Backbone-Signature      HMAC-SHA256(secret, canonical), in lowercase hex

where ``canonical`` is the method, the request target (path and query, as sent), the
timestamp, the nonce and the body's digest, one per line. The method and target bind the
signature to one call, the digest to its body, the timestamp to a window of ``WINDOW``
seconds either side of the server's clock; within it, :class:`ReplayGuard` refuses the same
signature twice, so a
captured request cannot be sent again, while the nonce lets a client send the same request
twice in one second (a retry with the same ``Idempotency-Key``) under two signatures.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

KEY = "x-backbone-key"
TIMESTAMP = "x-backbone-timestamp"
NONCE = "x-backbone-nonce"
CONTENT = "x-backbone-content-sha256"
SIGNATURE = "x-backbone-signature"
HEADERS = (KEY, TIMESTAMP, NONCE, CONTENT, SIGNATURE)
WINDOW = 300  # seconds a signature is good for, either side of the server's clock

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_METHOD = re.compile(r"[A-Z]{1,10}")
_TARGET_LIMIT = 8192  # characters of path and query


class Refusal(StrEnum):
    """Why a signature is refused (each a 401 problem's code)."""

    MISSING = "signature-missing"
    MALFORMED = "signature-malformed"
    UNKNOWN_KEY = "unknown-key"
    STALE = "signature-stale"
    CONTENT_MISMATCH = "content-digest-mismatch"
    BAD_SIGNATURE = "bad-signature"
    REPLAYED = "signature-replayed"


class SignatureRefused(Exception):
    """A request whose signature does not hold: ``reason`` says why, ``header`` where."""

    def __init__(self, reason: Refusal, header: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.header = header


def is_key_id(text: str) -> bool:
    """Has ``text`` the shape of a credential id (checked before it is looked up)?"""
    return _KEY_ID.fullmatch(text) is not None


def canonical(method: str, target: str, timestamp: str, nonce: str, content_sha256: str) -> bytes:
    """What is signed: one line each, so that no field can run into the next."""
    return "\n".join((method.upper(), target, timestamp, nonce, content_sha256)).encode()


def content_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign(
    key_id: str,
    secret: bytes,
    method: str,
    target: str,
    body: bytes,
    now: float,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that sign this request (for clients, tests and README's example)."""
    timestamp, digest = str(int(now)), content_digest(body)
    nonce = nonce or secrets.token_urlsafe(18)
    signature = hmac.new(secret, canonical(method, target, timestamp, nonce, digest), "sha256")
    return {
        KEY: key_id,
        TIMESTAMP: timestamp,
        NONCE: nonce,
        CONTENT: digest,
        SIGNATURE: signature.hexdigest(),
    }


def verify(
    headers: Mapping[str, str],
    method: str,
    target: str,
    body: bytes,
    secret_for: Callable[[str], bytes | None],
    now: float,
    window: int = WINDOW,
) -> str:
    """The credential id that signed this request, or :class:`SignatureRefused`. Cheap
    checks first: the headers' shapes, then the clock, the key, the body, the signature."""
    values = {name: headers.get(name) for name in HEADERS}
    for name, value in values.items():
        if not value:
            raise SignatureRefused(Refusal.MISSING, name, f"the request has no {name} header")
    key_id, timestamp, nonce, digest, signature = (str(values[name]) for name in HEADERS)
    shapes = (
        (KEY, key_id, _KEY_ID, "letters, digits, '_' or '-', at most 64"),
        (TIMESTAMP, timestamp, _TIMESTAMP, "Unix seconds"),
        (NONCE, nonce, _NONCE, "16 to 64 letters, digits, '_' or '-'"),
        (CONTENT, digest, _HEX64, "64 lowercase hex digits"),
        (SIGNATURE, signature, _HEX64, "64 lowercase hex digits"),
    )
    for name, value, shape, what in shapes:
        if not shape.fullmatch(value):
            raise SignatureRefused(Refusal.MALFORMED, name, f"{name} must be {what}")
    if not _METHOD.fullmatch(method.upper()) or not 0 < len(target) <= _TARGET_LIMIT:
        raise SignatureRefused(Refusal.MALFORMED, "", "the request line cannot be signed")
    skew = int(timestamp) - now
    if abs(skew) > window:
        raise SignatureRefused(
            Refusal.STALE,
            TIMESTAMP,
            f"{TIMESTAMP} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the "
            f"server's clock, more than the {window} s allowed",
        )
    secret = secret_for(key_id)
    if secret is None:
        raise SignatureRefused(Refusal.UNKNOWN_KEY, KEY, "no active credential has this key")
    if not hmac.compare_digest(digest, content_digest(body)):
        raise SignatureRefused(Refusal.CONTENT_MISMATCH, CONTENT, f"{CONTENT} is not the body's")
    expected = hmac.new(secret, canonical(method, target, timestamp, nonce, digest), "sha256")
    if not hmac.compare_digest(signature, expected.hexdigest()):
        raise SignatureRefused(
            Refusal.BAD_SIGNATURE, SIGNATURE, "the signature does not match this request"
        )
    return key_id


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """What signs a webhook call: HMAC-SHA256 of the timestamp, a newline and the body."""
    return hmac.new(secret, timestamp.encode() + b"\n" + body, "sha256").hexdigest()


def webhook_matches(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Does ``signature`` sign this webhook call? (What a receiver checks.)"""
    return hmac.compare_digest(signature, webhook_signature(secret, timestamp, body))


@dataclass
class ReplayGuard:
    """Signatures seen within the window, each refused a second time; an entry is kept
    until its timestamp leaves the window (a heap by expiry: each check costs O(log n)), so
    memory is bounded by the request rate."""

    window: int = WINDOW
    _seen: set[str] = field(default_factory=set)
    _expiries: list[tuple[int, str]] = field(default_factory=list)

    def check(self, headers: Mapping[str, str], now: float) -> None:
        """Call after :func:`verify` succeeded (its headers are then well formed)."""
        while self._expiries and self._expiries[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiries)[1])
        signature = headers[SIGNATURE]
        if signature in self._seen:
            raise SignatureRefused(
                Refusal.REPLAYED, SIGNATURE, "this signed request was received already"
            )
        self._seen.add(signature)
        heapq.heappush(self._expiries, (int(headers[TIMESTAMP]) + self.window, signature))

    def __len__(self) -> int:
        return len(self._seen)


class HmacAuth(httpx.Auth):
    """Signs every request of an httpx client with a credential: what a DMS written in
    Python needs (``httpx.Client(base_url=..., auth=HmacAuth(key_id, secret))``)."""

    requires_request_body = True

    def __init__(self, key_id: str, secret: str | bytes) -> None:
        self.key_id = key_id
        self.secret = secret.encode() if isinstance(secret, str) else secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("latin-1")  # path and query, as sent
        headers = sign(
            self.key_id, self.secret, request.method, target, request.content, time.time()
        )
        request.headers.update(headers)
        yield request
