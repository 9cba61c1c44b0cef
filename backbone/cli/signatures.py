"""Commands of the signing layer: sign, and the development PKI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import signing
from ..agency import AgencyCodeError
from ..config import get_settings
from ..errors import PackageError
from . import app
from ._common import read_limited


@app.command()
def sign(
    file: Annotated[Path, typer.Argument(help="The unsigned edXML package.")],
    key: Annotated[Path, typer.Option(help="The signer's private key (PEM).")],
    cert: Annotated[Path, typer.Option(help="The signer's certificate, then its chain (PEM).")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the signed package [FILE.signed.edxml].")
    ] = None,
) -> None:
    """Sign a package: enveloped XML-DSig in edXMLHeader, exclusive C14N, RSA/ECDSA-SHA256."""
    limits = get_settings().limits
    try:
        signed = signing.sign(
            read_limited(file, limits.max_package_bytes),
            signing.load_private_key(str(key)),
            signing.load_certificates(str(cert)),
            limits=limits,
        )
    except OSError as exc:
        typer.echo(f"error: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except PackageError as exc:
        typer.echo(f"error: {file} cannot be signed: {exc}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    target = out or file.with_suffix(".signed.edxml")
    target.write_bytes(signed)
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
    days: Annotated[int, typer.Option(help="Validity of the CAs in days.")] = 3650,
) -> None:
    """Create a root CA (and optionally an intermediate) with an empty CRL."""
    pki = signing.Pki(directory)
    try:
        pki.init(intermediate=intermediate, key_type="ec" if ec else "rsa", days=days)
    except signing.PkiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"PKI created in {directory}: trust anchor {pki.ca_bundle}, CRL {pki.crl}")


@pki_app.command("issue")
def pki_issue(
    code: Annotated[str, typer.Argument(help="The agency identifier, e.g. 000.00.00.H41.")],
    out: Annotated[Path, typer.Option(help="Directory for CODE.pem and CODE.key.")],
    pki_dir: Annotated[Path | None, typer.Option("--pki", help="The PKI directory.")] = None,
    name: Annotated[str | None, typer.Option(help="Common name [the identifier].")] = None,
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    ec: Annotated[bool, typer.Option("--ec", help="An ECDSA P-256 key instead of RSA.")] = False,
) -> None:
    """Issue an agency certificate: identifier in the subject (UID), digitalSignature."""
    try:
        issued = _pki(pki_dir).issue(
            code, out, name=name, days=days, key_type="ec" if ec else "rsa"
        )
    except (signing.PkiError, AgencyCodeError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{code}: certificate {issued.certificate}, key {issued.key}")
    typer.echo(f"sha256 fingerprint {issued.fingerprint}")


@pki_app.command("revoke")
def pki_revoke(
    cert: Annotated[Path, typer.Argument(help="The certificate to revoke (PEM).")],
    pki_dir: Annotated[Path | None, typer.Option("--pki", help="The PKI directory.")] = None,
) -> None:
    """Revoke a certificate and rewrite the CRL."""
    pki = _pki(pki_dir)
    try:
        serial = pki.revoke(cert)
    except (signing.PkiError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked serial {serial:x}; CRL written to {pki.crl}")
