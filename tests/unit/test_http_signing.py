"""The HTTP adapter's request signatures (adapters/http/signing.py): a signed request holds,
and each way of getting one wrong is refused with its own reason and header."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.http import signing
from adapters.http.signing import (
    CONTENT,
    KEY,
    NONCE,
    SIGNATURE,
    TIMESTAMP,
    Refusal,
    ReplayGuard,
)

SECRET = b"s3cret-of-the-dms"
NOW = 1_796_400_000.0
BODY = b"<edXMLEnvelope/>"
TARGET = "/v1/documents?as=000.00.00.G22"


def secret_for(key_id: str) -> bytes | None:
    return SECRET if key_id == "dms-g22" else None


def signed(**changes: str) -> dict[str, str]:
    headers = signing.sign("dms-g22", SECRET, "POST", TARGET, BODY, NOW)
    headers.update(changes)
    return headers


def test_a_signed_request_names_its_credential() -> None:
    assert signing.verify(signed(), "POST", TARGET, BODY, secret_for, NOW) == "dms-g22"
    late = NOW + signing.WINDOW  # the window's edge still holds
    assert signing.verify(signed(), "post", TARGET, BODY, secret_for, late) == "dms-g22"


Case = tuple[Callable[[], dict[str, str]], str, str, bytes, float, Refusal, str]
CASES: dict[str, Case] = {
    "no signature": (
        lambda: {k: v for k, v in signed().items() if k != SIGNATURE},
        "POST", TARGET, BODY, NOW, Refusal.MISSING, SIGNATURE,
    ),
    "empty key": (lambda: signed(**{KEY: ""}), "POST", TARGET, BODY, NOW, Refusal.MISSING, KEY),
    "key with a newline": (
        lambda: signed(**{KEY: "dms\ng22"}), "POST", TARGET, BODY, NOW, Refusal.MALFORMED, KEY,
    ),
    "timestamp in ISO form": (
        lambda: signed(**{TIMESTAMP: "2026-12-04T18:00:00Z"}),
        "POST", TARGET, BODY, NOW, Refusal.MALFORMED, TIMESTAMP,
    ),
    "no nonce": (
        lambda: {k: v for k, v in signed().items() if k != NONCE},
        "POST", TARGET, BODY, NOW, Refusal.MISSING, NONCE,
    ),
    "nonce too short to be one": (
        lambda: signed(**{NONCE: "1"}), "POST", TARGET, BODY, NOW, Refusal.MALFORMED, NONCE,
    ),
    "nonce changed after signing": (
        lambda: signed(**{NONCE: "another-nonce-0123"}),
        "POST", TARGET, BODY, NOW, Refusal.BAD_SIGNATURE, SIGNATURE,
    ),
    "uppercase digest": (
        lambda: signed(**{CONTENT: signing.content_digest(BODY).upper()}),
        "POST", TARGET, BODY, NOW, Refusal.MALFORMED, CONTENT,
    ),
    "signature too short": (
        lambda: signed(**{SIGNATURE: "ab" * 16}),
        "POST", TARGET, BODY, NOW, Refusal.MALFORMED, SIGNATURE,
    ),
    "a target too long to sign": (
        signed, "POST", "/" + "x" * 9000, BODY, NOW, Refusal.MALFORMED, "",
    ),
    "signed too long ago": (
        signed, "POST", TARGET, BODY, NOW + signing.WINDOW + 1, Refusal.STALE, TIMESTAMP,
    ),
    "signed in the future": (
        signed, "POST", TARGET, BODY, NOW - signing.WINDOW - 1, Refusal.STALE, TIMESTAMP,
    ),
    "unknown key": (
        lambda: signed(**{KEY: "dms-h41"}), "POST", TARGET, BODY, NOW, Refusal.UNKNOWN_KEY, KEY,
    ),
    "another body": (
        signed, "POST", TARGET, BODY + b" ", NOW, Refusal.CONTENT_MISMATCH, CONTENT,
    ),
    "another method": (signed, "PUT", TARGET, BODY, NOW, Refusal.BAD_SIGNATURE, SIGNATURE),
    "another target": (
        signed, "POST", "/v1/documents?as=000.00.00.H41", BODY, NOW,
        Refusal.BAD_SIGNATURE, SIGNATURE,
    ),
    "another body with its digest": (
        lambda: signed(**{CONTENT: signing.content_digest(b"<other/>")}),
        "POST", TARGET, b"<other/>", NOW, Refusal.BAD_SIGNATURE, SIGNATURE,
    ),
    "another secret": (
        lambda: signing.sign("dms-g22", b"guessed", "POST", TARGET, BODY, NOW),
        "POST", TARGET, BODY, NOW, Refusal.BAD_SIGNATURE, SIGNATURE,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_wrong_signature_is_refused_with_its_reason(case: Case) -> None:
    headers, method, target, body, now, reason, header = case
    with pytest.raises(signing.SignatureRefused) as refused:
        signing.verify(headers(), method, target, body, secret_for, now)
    assert (refused.value.reason, refused.value.header) == (reason, header)
    assert "\n" not in str(refused.value) and SECRET.decode() not in str(refused.value)


def test_the_same_signed_request_is_refused_the_second_time_until_it_is_stale() -> None:
    guard = ReplayGuard()
    first, second = signed(), signing.sign("dms-g22", SECRET, "POST", TARGET, BODY, NOW + 1)
    guard.check(first, NOW)
    guard.check(second, NOW + 1)  # another timestamp: another request
    with pytest.raises(signing.SignatureRefused) as refused:
        guard.check(first, NOW + 2)
    assert refused.value.reason == Refusal.REPLAYED
    # once its timestamp has left the window, verify() refuses it as stale: the guard forgets
    guard.check(signed(**{SIGNATURE: "0" * 64, TIMESTAMP: str(int(NOW) + 10)}), NOW + 300.5)
    assert len(guard) == 2  # the first is gone, the second and the last are kept


def test_the_same_request_twice_in_one_second_is_two_requests() -> None:
    """A retry (the same body, an Idempotency-Key) signed in the same second has its own
    nonce, hence its own signature: the guard takes both."""
    guard = ReplayGuard()
    first, retry = signed(), signed()
    assert first[SIGNATURE] != retry[SIGNATURE]
    for headers in (first, retry):
        signing.verify(headers, "POST", TARGET, BODY, secret_for, NOW)
        guard.check(headers, NOW)
