"""Commands of the signing layer: sign, and the development PKI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import edxml, signing
from ..agency import AgencyCode, AgencyCodeError
from ..config import get_settings
from ..errors import PackageError
from ..files import write_durably
from ..safe import printable
from . import app
from ._common import (
    certificate_agency,
    fail,
    load_signer,
    os_failure,
    read_limited,
    writable_file,
)

_MAX_DAYS = 36500  # a validity X.509 dates can hold (they end in 9999)
_MAX_NAME = 64  # the bound of an X.509 common name


@app.command()
def sign(
    file: Annotated[Path, typer.Argument(help="The unsigned edXML package.")],
    key: Annotated[Path, typer.Option(help="The signer's private key (PEM, unencrypted).")],
    cert: Annotated[Path, typer.Option(help="The signer's certificate, then its chain (PEM).")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the signed package [FILE.signed.edxml].")
    ] = None,
) -> None:
    """Sign a package: enveloped XML-DSig in edXMLHeader, exclusive C14N, RSA/ECDSA-SHA256.

    Refuses a key that is not the certificate's; warns when the certificate names another
    agency than the package's sender (validators would refuse the package).
    """
    limits = get_settings().limits
    target = out or file.with_suffix(".signed.edxml")
    writable_file(target)
    try:
        data = read_limited(file, limits.max_package_bytes)
    except OSError as exc:
        raise os_failure(file, exc, "cannot read") from None
    private, chain = load_signer(key, cert)
    try:
        package = edxml.parse(data, limits)
        signed = signing.sign(data, private, chain, limits=limits)
    except PackageError as exc:
        more = len(exc.issues) - 1
        also = f" (and {more} more {'fault' if more == 1 else 'faults'})" if more else ""
        reason = printable(str(exc.issues[0]), 300)
        raise fail(
            f"{file}: not an unsigned edXML package that can be signed: {reason}{also}"
        ) from None
    agency, sender = certificate_agency(chain[0]), package.sender
    if agency != sender:
        named = f"is for {printable(agency, 40)}" if agency else "names no agency (no UID)"
        typer.echo(
            f"warning: the certificate {cert} {named} but the package is from "
            f"{printable(sender, 40) or 'no agency'}: validators that bind certificates "
            "to agencies will refuse it",
            err=True,
        )
    try:
        write_durably(target, signed)
    except OSError as exc:
        raise os_failure(target, exc) from None
    typer.echo(f"signed {file} -> {target}")


pki_app = typer.Typer(
    help="A development PKI: CAs, agency certificates, a CRL.", no_args_is_help=True
)
app.add_typer(pki_app, name="pki")


def _pki(directory: Path | None) -> signing.Pki:
    return signing.Pki(directory or get_settings().pki_dir)


@pki_app.command("init")
def pki_init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the PKI in.")],
    intermediate: Annotated[
        bool, typer.Option(help="Issue agency certificates from an intermediate CA.")
    ] = False,
    ec: Annotated[bool, typer.Option("--ec", help="ECDSA P-256 keys instead of RSA-2048.")] = False,
    days: Annotated[
        int, typer.Option(min=1, max=_MAX_DAYS, help="Validity of the CAs in days.")
    ] = 3650,
) -> None:
    """Create a root CA (and optionally an intermediate) with an empty CRL."""
    pki = signing.Pki(directory)
    try:
        pki.init(intermediate=intermediate, key_type="ec" if ec else "rsa", days=days)
    except signing.PkiError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise os_failure(directory, exc, "cannot create the PKI") from None
    typer.echo(f"PKI created in {directory}: trust anchor {pki.ca_bundle}, CRL {pki.crl}")


@pki_app.command("issue")
def pki_issue(
    code: Annotated[str, typer.Argument(help="The agency identifier, e.g. 000.00.00.H41.")],
    out: Annotated[Path, typer.Option(help="Directory for CODE.pem and CODE.key.")],
    pki_dir: Annotated[
        Path | None, typer.Option("--pki", help="The PKI directory [BACKBONE_PKI_DIR].")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Common name [the identifier].")] = None,
    days: Annotated[int, typer.Option(min=1, max=_MAX_DAYS, help="Validity in days.")] = 365,
    ec: Annotated[bool, typer.Option("--ec", help="An ECDSA P-256 key instead of RSA.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace CODE.key and CODE.pem if they exist.")
    ] = False,
) -> None:
    """Issue an agency certificate: identifier in the subject (UID), digitalSignature."""
    try:
        AgencyCode.parse(code)
    except AgencyCodeError as exc:
        raise fail(str(exc)) from None
    if name is not None and not (0 < len(name) <= _MAX_NAME and printable(name) == name):
        raise fail(f"--name: give 1 to {_MAX_NAME} printable characters")
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file: give a folder for {code}.key and {code}.pem")
    pki = _pki(pki_dir)
    try:
        pki.issuer()  # a missing or damaged PKI is said first
        existing = [p for p in (out / f"{code}.key", out / f"{code}.pem") if p.exists()]
        if existing and not force:
            raise fail(
                f"{' and '.join(map(str, existing))} already "
                f"{'exists' if len(existing) == 1 else 'exist'}: "
                "give another --out, or --force to replace"
            )
        issued = pki.issue(code, out, name=name, days=days, key_type="ec" if ec else "rsa")
    except signing.PkiError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise os_failure(Path(exc.filename or out), exc) from None
    typer.echo(f"{code}: certificate {issued.certificate}, key {issued.key}")
    typer.echo(f"sha256 fingerprint {issued.fingerprint}")


@pki_app.command("revoke")
def pki_revoke(
    cert: Annotated[Path, typer.Argument(help="The certificate to revoke (PEM).")],
    pki_dir: Annotated[
        Path | None, typer.Option("--pki", help="The PKI directory [BACKBONE_PKI_DIR].")
    ] = None,
) -> None:
    """Revoke a certificate and rewrite the CRL (nothing changes if it is revoked already)."""
    pki = _pki(pki_dir)
    try:
        revocation = pki.revoke(cert)
    except signing.PkiError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise os_failure(Path(exc.filename or pki.directory), exc) from None
    if revocation.changed:
        typer.echo(f"revoked serial {revocation.serial:x}; CRL written to {pki.crl}")
    else:
        typer.echo(f"serial {revocation.serial:x} was revoked already; nothing changed")


@pki_app.command("crl")
def pki_crl(
    pki_dir: Annotated[
        Path | None, typer.Option("--pki", help="The PKI directory [BACKBONE_PKI_DIR].")
    ] = None,
    days: Annotated[
        int, typer.Option(min=1, max=_MAX_DAYS, help="Days until the next update.")
    ] = 7,
) -> None:
    """Sign the CRLs again with a later next update: validators refuse every signature
    once a CRL is out of date (revoking a certificate signs them too)."""
    pki = _pki(pki_dir)
    try:
        pki.write_crls(days=days)
    except signing.PkiError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise os_failure(Path(exc.filename or pki.directory), exc) from None
    written = ", ".join(str(path) for path in pki.crls())
    typer.echo(f"CRLs signed again: {written}; next update in {days} day{'s' if days > 1 else ''}")
