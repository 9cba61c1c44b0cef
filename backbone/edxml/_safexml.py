"""Parsing untrusted bytes into an lxml tree, and the schema check.

The parser never resolves entities, never loads a DTD, never touches the network, and
keeps libxml2's limits on depth and text size unless the package is so large that a
legitimate attachment needs more (the size limit has been checked first). Any DTD at
all is refused: edXML has no use for one, and refusing it closes the entity attacks.
"""

from __future__ import annotations

import re
import threading
from functools import cache
from importlib import resources
from pathlib import Path

from lxml import etree

from ..errors import ErrorCode, InvalidPackage, Issue, MalformedPackage, UnsafePackage
from .limits import Limits
from .models import NAMESPACE

# libxml2 refuses a single text node over 10 MB without XML_PARSE_HUGE; a package this
# big may carry such an attachment legitimately.
_HUGE_ABOVE = 8 * 1024 * 1024
_ROOT_TAG = f"{{{NAMESPACE}}}edXML"
_MAX_SCHEMA_ISSUES = 20

_BOM = b"\xef\xbb\xbf"
_SPACE = re.compile(rb"[ \t\r\n]*")
_POSITION = re.compile(r", line \d+, column \d+$")
_local = threading.local()


def _parser(huge: bool, keep_comments: bool = False) -> etree.XMLParser:
    """One parser per thread and mode: lxml parsers must not be shared across threads.

    Comments and processing instructions are dropped unless a signature is to be
    checked: a canonical form with comments, and every canonical form of a processing
    instruction, covers them.
    """
    key = f"parser-{huge}-{keep_comments}"
    parser: etree.XMLParser | None = getattr(_local, key, None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=huge,
            remove_comments=not keep_comments,
            remove_pis=not keep_comments,
            collect_ids=False,
        )
        setattr(_local, key, parser)
    return parser


def parser_for(size: int, keep_comments: bool = False) -> etree.XMLParser:
    """The safe parser fit for a document of ``size`` bytes."""
    return _parser(huge=size > _HUGE_ABOVE, keep_comments=keep_comments)


def parse_untrusted(data: bytes, limits: Limits, *, keep_comments: bool = False) -> etree._Element:
    """Parse ``data`` into the edXML root element, or raise a PackageError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"a package is bytes, not {type(data).__name__}")
    size = len(data)
    if size > limits.max_package_bytes:
        raise UnsafePackage(
            Issue.of(
                ErrorCode.TOO_LARGE,
                "",
                f"the package is {size} bytes, over the limit of {limits.max_package_bytes}",
            )
        )
    if size == 0:
        raise MalformedPackage(Issue.of(ErrorCode.MALFORMED, "", "the package is empty"))
    data = bytes(data)
    if _doctype_in_prolog(data):
        raise _dtd_forbidden()
    try:
        root = etree.fromstring(data, parser_for(size, keep_comments))
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise _dtd_forbidden()  # the prolog check missed it; the parser resolved nothing
    encoding = (docinfo.encoding or "UTF-8").upper()
    if encoding not in ("UTF-8", "UTF8"):
        raise UnsafePackage(
            Issue.of(ErrorCode.NOT_UTF8, "", "edXML packages must be encoded in UTF-8", encoding)
        )
    if root.tag != _ROOT_TAG:
        raise MalformedPackage(
            Issue.of(
                ErrorCode.WRONG_ROOT,
                "/" + _readable(str(root.tag)),
                f"the root element must be edXML in the namespace {NAMESPACE}",
                _readable_tag(str(root.tag)),
            )
        )
    return root


def _doctype_in_prolog(data: bytes) -> bool:
    """Whether a DOCTYPE stands in the prolog (after a BOM, declaration, comments, PIs and
    whitespace), the only place one can be: refused there, the parser never sees it."""
    at = len(_BOM) if data.startswith(_BOM) else 0
    while True:
        match = _SPACE.match(data, at)
        at = match.end() if match else at
        if data.startswith(b"<?", at):
            end = data.find(b"?>", at + 2)
        elif data.startswith(b"<!--", at):
            end = data.find(b"-->", at + 4)
        else:
            return data.startswith(b"<!DOCTYPE", at)
        if end < 0:
            return False  # unterminated: the parser will call it malformed
        at = end + 2 if data[at + 1 : at + 2] == b"?" else end + 3


def _dtd_forbidden() -> UnsafePackage:
    return UnsafePackage(
        Issue.of(ErrorCode.DTD_FORBIDDEN, "", "a DOCTYPE is not allowed in an edXML package")
    )


def _syntax_error(exc: etree.XMLSyntaxError) -> Exception:
    message = _POSITION.sub("", str(exc.msg or exc))
    line, column = exc.position if exc.position else (exc.lineno, None)
    lowered = message.lower()
    if "encoding" in lowered or "utf-8" in lowered or "not proper" in lowered:
        return UnsafePackage(
            Issue.of(ErrorCode.NOT_UTF8, "", f"not valid UTF-8: {message}", None, line, column)
        )
    if "excessive depth" in lowered or "huge" in lowered:
        return UnsafePackage(
            Issue.of(
                ErrorCode.TOO_LARGE,
                "",
                f"the tree is too deep or too big: {message}",
                None,
                line,
                column,
            )
        )
    if "entity" in lowered and ("amplification" in lowered or "loop" in lowered):
        return UnsafePackage(
            Issue.of(
                ErrorCode.DTD_FORBIDDEN,
                "",
                f"entity expansion refused: {message}",
                None,
                line,
                column,
            )
        )
    return MalformedPackage(
        Issue.of(ErrorCode.MALFORMED, "", f"not well-formed XML: {message}", None, line, column)
    )


@cache
def _schema_path() -> Path:
    """The XSD: shipped inside the wheel, or read from the source tree's ``schemas/``."""
    packaged = resources.files("backbone").joinpath("_schemas/edxml.xsd")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "schemas" / "edxml.xsd"


def _schema() -> etree.XMLSchema:
    schema: etree.XMLSchema | None = getattr(_local, "schema", None)
    if schema is None:
        schema = etree.XMLSchema(etree.parse(str(_schema_path())))
        _local.schema = schema
    return schema


def check_schema(root: etree._Element) -> None:
    """Validate against ``schemas/edxml.xsd``; raise InvalidPackage listing what failed."""
    schema = _schema()
    if schema.validate(root):
        return
    issues = [
        Issue.of(
            ErrorCode.SCHEMA,
            _readable(entry.path or ""),
            _readable(entry.message),
            None,
            entry.line,
            entry.column or None,
        )
        for entry in list(schema.error_log)[:_MAX_SCHEMA_ISSUES]  # type: ignore[call-overload]
    ]
    raise InvalidPackage(issues or [Issue.of(ErrorCode.SCHEMA, "", "schema validation failed")])


def _readable(text: str) -> str:
    """Drop namespace noise (``{uri}`` and ``edXML:`` prefixes) from lxml's messages."""
    return text.replace(f"{{{NAMESPACE}}}", "").replace("edXML:", "")


def _readable_tag(tag: str) -> str:
    return tag if tag.startswith("{") else f"{tag} (no namespace)"
