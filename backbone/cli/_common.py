"""Helpers shared by the command modules."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import typer
from aiormq.exceptions import InvalidFrameError, ProbableAuthenticationError
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .. import signing
from ..config import get_settings
from ..errors import BackboneError, BrokerError
from ..registry import Registry
from ..signing.pki import AGENCY_ATTRIBUTE, PrivateKey
from ..store import Store

T = TypeVar("T")
_ERRNO = re.compile(r"\"?\[Errno -?\d+\] (?P<reason>[^\"]*)\"?")
_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)


def mask(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most one byte over the limit: the parser refuses it without us holding more."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def plain(text: str) -> str:
    """A message as a user reads it: on one line, passwords masked, without the errno
    decoration the OS and asyncio wrap their reasons in (``"[Errno 111] Connect call
    failed ..."``)."""
    return _ERRNO.sub(r"\g<reason>", " ".join(mask(text).split()))


def warn(message: str) -> None:
    """One line ``warning: ...`` on stderr, in the words of :func:`plain`."""
    typer.echo(f"warning: {plain(message)}", err=True)


def fail(message: str) -> typer.Exit:
    """Say what went wrong on stderr, on one line with passwords masked; the caller raises
    the returned exit (status 1)."""
    line = plain(message)
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(1)


def os_failure(path: Path, exc: OSError, doing: str = "cannot write") -> typer.Exit:
    """A file error as ``error: PATH: cannot write: No such file or directory``."""
    return fail(f"{path}: {doing}: {exc.strerror or exc}")


def writable_file(path: Path) -> None:
    """Refuse an output path that cannot be a file before any work is done."""
    if path.is_dir():
        raise fail(f"{path}: is a directory, give a file name")
    if not path.parent.is_dir():
        raise fail(f"{path}: the folder {path.parent} does not exist")


def database_failure(exc: Exception, url: str) -> typer.Exit:
    """A database error in words an operator can act on (the URL's password masked)."""
    text = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    if "no such table" in text or "does not exist" in text:
        return fail(f"the database {url} is not set up: run `backbone init`")
    return fail(f"the database {url} cannot be used: {text.splitlines()[0] if text else exc!r}")


def with_registry(work: Callable[[Registry], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database, with errors a user can act on."""
    settings = get_settings()

    async def run() -> T:
        store = Store(settings.database_url)
        try:
            return await work(Registry(store, ttl=settings.registry_ttl))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except BackboneError as exc:  # the registry's refusals, the operations' failures
        raise fail(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        raise database_failure(exc, settings.database_url) from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def load_signer(key: Path, cert: Path) -> tuple[PrivateKey, list[x509.Certificate]]:
    """The key and certificate chain to sign with, each file's fault in our words, and
    refused when the key is not the certificate's."""
    try:
        private = signing.load_private_key(str(key))
    except OSError as exc:
        raise os_failure(key, exc, "cannot read") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise fail(f"{key}: not an unencrypted PEM private key (RSA or EC)") from None
    try:
        chain = signing.load_certificates(str(cert))
    except OSError as exc:
        raise os_failure(cert, exc, "cannot read") from None
    except ValueError:
        raise fail(f"{cert}: not a PEM certificate") from None
    if not chain:
        raise fail(f"{cert}: not a PEM certificate")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, public) != chain[
        0
    ].public_key().public_bytes(serialization.Encoding.DER, public):
        raise fail(f"{key} is not the key of the certificate {cert}")
    return private, chain


def certificate_agency(certificate: x509.Certificate) -> str | None:
    """The agency identifier in a certificate's subject (the UID attribute), if any."""
    values = certificate.subject.get_attributes_for_oid(AGENCY_ATTRIBUTE)
    return str(values[0].value) if values else None


_PLURALS = {
    "status": "statuses",
    "delivery": "deliveries",
    "agency": "agencies",
    "other inbox": "other inboxes",
}


def plural(count: int, noun: str) -> str:
    """``1 connection``, ``2 connections``, ``3 agencies``: a count with its noun."""
    return f"{count:,} {noun if count == 1 else _PLURALS.get(noun, noun + 's')}"


def password_from(path: Path) -> str:
    """The password in the first line of a file (so that it is not on the command line,
    where every user of the machine can read it)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not a UTF-8 text file"
        raise fail(f"cannot read the password file {path}: {why}") from None
    return checked_password(lines[0] if lines else "", f"the password in {path}")


def checked_password(password: str, what: str = "the password") -> str:
    """A broker password: not blank, at most 1,024 characters, no control characters."""
    if not password.strip():
        raise fail(f"{what} is empty")
    if len(password) > 1024:
        raise fail(f"{what} is longer than 1,024 characters")
    if re.search(r"[\x00-\x1f\x7f]", password):
        raise fail(f"{what} contains a control character")
    return password


CONNECT_TIMEOUT = 15.0  # seconds: a broker that has not answered by then is not there


@contextmanager
def quiet_broker_library() -> Iterator[None]:
    """Keep aio-pika's and aiormq's own lines (a failed connection attempt is logged at
    ERROR before it is raised) off a command's stderr: the command says it in one line."""
    loggers = [logging.getLogger(name) for name in ("aio_pika", "aiormq")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def broker_failure(exc: BaseException, url: str, username: str) -> typer.Exit:
    """A broker error in words a user can act on; the URL's password never shown."""
    broker = mask(url)
    if isinstance(exc, BrokerError) and exc.__cause__ is not None:
        exc = exc.__cause__  # the broker library's own error tells which failure it was
    if isinstance(exc, TimeoutError):
        return fail(f"the broker {broker} did not answer within {CONNECT_TIMEOUT:g} s")
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    if isinstance(exc, ProbableAuthenticationError):
        return fail(f"the broker {broker} refused the login of {username}: wrong user or password")
    if (isinstance(exc, InvalidFrameError) and "Connection.Close" in reason) or (
        "vhost" in reason and "NOT_ALLOWED" in reason
    ):  # the broker closes instead of opening the virtual host (aiormq keeps no reason)
        vhost = unquote(urlsplit(url).path[1:]) or "/"
        return fail(
            f"the broker {broker} has no virtual host {vhost!r}, or {username} may not use it"
        )
    if isinstance(exc, OSError):
        return fail(f"cannot reach the broker {broker}: {reason}")
    return fail(f"the broker {broker} refused {username}: {reason}")
