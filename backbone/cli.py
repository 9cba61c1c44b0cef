"""The ``backbone`` command. Each sub-command has --help and a clear exit status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import __version__, edxml, signing
from .agency import AgencyCodeError
from .config import get_settings
from .errors import PackageError, TrustConfigError
from .logs import configure

app = typer.Typer(
    name="backbone",
    help="Document-exchange backbone: signed edXML packages between agencies over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backbone {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    settings = get_settings()
    configure(settings.log_format or "console", settings.log_level)


def _read(path: Path, limit: int) -> bytes:
    """Read at most one byte over the limit: the parser refuses it without us holding more."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def summary(package: edxml.Package) -> str:
    """One line that says what a valid package is."""
    if isinstance(package, edxml.StatusPackage):
        code = package.header.status_code
        meaning = edxml.STATUS_CODES.get(code, "?")
        return (
            f"status {code} ({meaning}) from {package.sender} about document {package.document_id}"
        )
    recipients = ", ".join(str(r) for r in package.recipients)
    size = sum(len(a.data) for a in package.attachments)
    return (
        f"edoc from {package.sender} to {recipients} document {package.document_id} "
        f"attachments {len(package.attachments)} ({size} bytes)"
    )


def _verifier(
    trust: Path | None, crls: list[Path], allow_sha1: bool, attribute: str
) -> signing.Verifier | None:
    if trust is None:
        return None
    try:
        store = signing.TrustStore.from_files(trust, crls)
        binding = signing.SubjectBinding(attribute)
    except (TrustConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return signing.Verifier(store, binding, allow_sha1=allow_sha1, limits=get_settings().limits)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="edXML package files to check.")],
    trust: Annotated[
        Path | None,
        typer.Option(help="CA bundle (PEM): also verify each package's signature against it."),
    ] = None,
    crl: Annotated[
        list[Path] | None, typer.Option(help="CRL file to check revocation against (repeatable).")
    ] = None,
    allow_sha1: Annotated[
        bool | None, typer.Option("--allow-sha1", help="Accept legacy SHA-1 signatures.")
    ] = None,
    bind_attribute: Annotated[
        str | None,
        typer.Option(help="Certificate subject attribute holding the agency identifier."),
    ] = None,
) -> None:
    """Check edXML packages offline: safe parse, schema, semantic rules, and with --trust
    the signature (chain, validity, revocation, and that it belongs to the sender).

    Prints one line per valid package; for an invalid one, the reasons on stderr.
    Exit status 0 when every file is valid, 1 otherwise, 2 for unusable trust settings.
    """
    settings = get_settings()
    limits = settings.limits
    verifier = _verifier(
        trust or settings.trust_bundle,
        crl if crl is not None else settings.crl_files,
        settings.allow_sha1 if allow_sha1 is None else allow_sha1,
        bind_attribute or settings.cert_agency_attribute,
    )
    failed = 0
    for path in files:
        try:
            data = _read(path, limits.max_package_bytes)
            if verifier is None:
                package, signer = edxml.load(data, limits), ""
            else:
                verified = verifier.verify(data)
                package = edxml.check(verified.package)
                signer = (
                    f" signed by {verified.certificate.subject.rfc4514_string()} "
                    f"(sha256 {verified.fingerprint[:16]}…)"
                )
        except OSError as exc:
            failed += 1
            typer.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
        except PackageError as exc:
            failed += 1
            typer.echo(f"{path}: invalid: {exc.issues[0]}", err=True)
            for issue in exc.issues[1:]:
                typer.echo(f"{path}:   also {issue}", err=True)
        else:
            typer.echo(f"{path}: valid {summary(package)}{signer}")
    raise typer.Exit(1 if failed else 0)


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
            _read(file, limits.max_package_bytes),
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


@app.command()
def demo() -> None:
    """Tell the story of one document through the format layer (the pipeline joins later)."""
    from .demo import run

    run()
