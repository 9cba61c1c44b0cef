"""Parsing untrusted bytes into an lxml tree, and the schema check.

The parser never resolves entities, never loads a DTD, never touches the network, and
keeps libxml2's limits on depth and text size unless the package is so large that a
legitimate attachment needs more (the size limit has been checked first). Any DTD at
all is refused: edXML has no use for one, and refusing it closes the entity attacks.
"""

from __future__ import annotations

import itertools
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
_WIDE_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)
_WIDE_STARTS = {b"\x00\x00\x00<", b"<\x00\x00\x00", b"\x00<\x00?", b"<\x00?\x00"}
_DECLARED_ENCODING = re.compile(
    rb"(?:\xef\xbb\xbf)?<\?xml[ \t\r\n][^>]*?encoding[ \t\r\n]*=[ \t\r\n]*[\"']([^\"'>]*)[\"']"
)
# a prefix holds no ':' and is bounded: `xmlns:xmlns:xmlns:...` without '=' is one short
# try per occurrence, not a rescan of the rest of the run from each (quadratic)
_XMLNS = re.compile(rb"xmlns(?::[^ \t\r\n=/>:]{1,255})?[ \t\r\n]*=")
_TAG_NAME = re.compile(rb"[^ \t\r\n/>]+")
_UTF8_CHUNK = 1024 * 1024
_SPACE = re.compile(rb"[ \t\r\n]*")
_POSITION = re.compile(r", line \d+, column \d+$")
_local = threading.local()
_building = threading.Lock()  # see _schema()


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
    """Parse ``data`` into the edXML root element, or raise a PackageError.

    Everything that can be refused on the bytes is, before the parser builds anything:
    size, encoding, the number of tags and of namespace declarations, a DOCTYPE. Each
    of these costs one pass in C over the bytes (the UTF-8 check a pass in chunks).
    """
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
    _check_wide_encoding(data)
    _check_markup(data, limits)
    _check_namespaces(data, limits)
    _check_utf8(data)
    if data.startswith(b"<!DOCTYPE", _prolog_end(data)):
        raise _dtd_forbidden()
    try:
        root = etree.fromstring(data, parser_for(size, keep_comments))
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise _dtd_forbidden()  # the prolog check missed it; the parser resolved nothing
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


def _not_utf8(
    message: str, value: str | None = None, at: int | None = None, data: bytes = b""
) -> UnsafePackage:
    line, column = _position(data, at) if at is not None else (None, None)
    return UnsafePackage(
        Issue.of(
            ErrorCode.NOT_UTF8, "", f"edXML packages are UTF-8: {message}", value, line, column
        )
    )


def _position(data: bytes, at: int) -> tuple[int, int]:
    """Line and column (1-based, in bytes) of offset ``at``."""
    return data.count(b"\n", 0, at) + 1, at - (data.rfind(b"\n", 0, at) + 1) + 1


def _check_wide_encoding(data: bytes) -> None:
    """Refuse UTF-16 and UTF-32 by their byte-order marks, or by how ``<`` starts them
    without one (XML 1.0 appendix F): the parser would read them without complaint."""
    for mark, name in _WIDE_BOMS:
        if data.startswith(mark):
            raise _not_utf8(f"it starts with a {name} byte-order mark", name)
    if data[:4] in _WIDE_STARTS:
        raise _not_utf8("it is UTF-16 or UTF-32 text (NUL bytes around '<')", at=0, data=data)


def _check_utf8(data: bytes) -> None:
    """The bytes are strict UTF-8 and any encoding declaration says so: a declared
    ISO-8859-1 or windows-1258 would make the parser reinterpret them."""
    declared = _DECLARED_ENCODING.match(data)
    if declared is not None and declared[1].upper() not in (b"UTF-8", b"UTF8"):
        encoding = declared[1].decode("ascii", "replace")
        raise _not_utf8(f"the XML declaration says encoding={encoding!r}", encoding, 0, data)
    view = memoryview(data)
    start = 0
    while start < len(data):
        end = min(start + _UTF8_CHUNK, len(data))
        for _ in range(3):  # never split a character: cut before its continuation bytes
            if end == len(data) or data[end] & 0xC0 != 0x80:
                break
            end -= 1
        try:
            str(view[start:end], "utf-8")
        except UnicodeDecodeError as exc:
            at = start + exc.start
            raise _not_utf8(
                f"invalid UTF-8 byte 0x{data[at]:02X} ({exc.reason})", None, at, data
            ) from None
        start = end


def _check_markup(data: bytes, limits: Limits) -> None:
    """Bound the elements before the tree exists: every element needs at least one ``<``."""
    markup = data.count(b"<")
    if markup > limits.max_markup:
        raise UnsafePackage(
            Issue.of(
                ErrorCode.TOO_LARGE,
                "",
                f"the package has {markup} tags (counted as '<'), over the limit of "
                f"{limits.max_markup}",
            )
        )


def _check_namespaces(data: bytes, limits: Limits) -> None:
    """Bound the namespace declarations (so the namespaces in scope at any element).

    ``xmlns`` counted in C is an upper bound; only past the limit are declarations
    told apart from text that happens to contain the word, and the search stops at the
    first one over the limit: it names that start tag and its line.
    """
    limit = limits.max_namespace_declarations
    if data.count(b"xmlns") <= limit:
        return
    over = next(itertools.islice(_XMLNS.finditer(data), limit, None), None)
    if over is None:
        return
    tag_at = data.rfind(b"<", 0, over.start())
    name = _TAG_NAME.match(data, tag_at + 1) if tag_at >= 0 else None
    qname = name[0].decode("utf-8", "replace") if name else ""
    local = qname.rpartition(":")[2]
    line, column = _position(data, over.start())
    raise UnsafePackage(
        Issue.of(
            ErrorCode.TOO_LARGE,
            f"/{local}" if tag_at == _prolog_end(data) else "",
            f"more than {limit} namespace declarations (xmlns) in the package; the one over "
            f"the limit is in the start tag <{qname}>",
            qname,
            line,
            column,
        )
    )


def _prolog_end(data: bytes) -> int:
    """Where the prolog (a BOM, the declaration, comments, PIs, whitespace) ends: a
    DOCTYPE can stand only there, and the root element starts there."""
    at = len(_BOM) if data.startswith(_BOM) else 0
    while True:
        match = _SPACE.match(data, at)
        at = match.end() if match else at
        if data.startswith(b"<?", at):
            end = data.find(b"?>", at + 2)
        elif data.startswith(b"<!--", at):
            end = data.find(b"-->", at + 4)
        else:
            return at
        if end < 0:
            return len(data)  # unterminated: the parser will call it malformed
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
    """This thread's schema, made one thread at a time. Once in CI, the HTTP adapter's
    first packages, read in several threads together, failed with libxml2's "Internal
    error: xmlSchemaPValAttrNodeValue, the given type is not a built-in type", a fault of
    schemas built concurrently; 16 threads at once did not bring it back here."""
    schema: etree.XMLSchema | None = getattr(_local, "schema", None)
    if schema is None:
        with _building:
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
