"""The edXML format layer: safe parsing, structure, semantic rules, building. Pure: no I/O.

    parse(data)  -> Package      untrusted bytes -> model (safe parse, schema, cardinality)
    check(pkg)   -> Package      semantic rules; every fault reported at once
    load(data)   -> Package      parse then check: what a validator wants
    build(pkg)   -> bytes        model -> edXML (checked first unless told otherwise)

Every refusal is a :class:`backbone.errors.PackageError`; its ``path`` is built from
:mod:`backbone.edxml.paths`, the one list of where the elements stand.
"""

from __future__ import annotations

from lxml import etree

from ..errors import PackageError
from . import paths
from ._reader import Reader
from ._safexml import check_schema, parse_untrusted
from ._writer import to_bytes, to_tree
from .limits import DEFAULT_LIMITS, Limits
from .models import (
    NAMESPACE,
    Attachment,
    Bussiness,
    DocumentCode,
    DocumentHeader,
    DocumentPackage,
    DocumentType,
    Organization,
    OtherInfo,
    Package,
    PromulgationInfo,
    Reference,
    ResponseFor,
    SignerInfo,
    StaffInfo,
    StatusHeader,
    StatusPackage,
    TraceHeader,
    TraceHeaderList,
)
from .rules import STATUS_CODES, check

__all__ = [
    "DEFAULT_LIMITS",
    "NAMESPACE",
    "STATUS_CODES",
    "Attachment",
    "Bussiness",
    "DocumentCode",
    "DocumentHeader",
    "DocumentPackage",
    "DocumentType",
    "Limits",
    "Organization",
    "OtherInfo",
    "Package",
    "PackageError",
    "PromulgationInfo",
    "Reference",
    "ResponseFor",
    "SignerInfo",
    "StaffInfo",
    "StatusHeader",
    "StatusPackage",
    "TraceHeader",
    "TraceHeaderList",
    "build",
    "check",
    "load",
    "load_tree",
    "parse",
    "paths",
    "read_tree",
    "to_tree",
]


def read_tree(root: etree._Element, limits: Limits = DEFAULT_LIMITS) -> Package:
    """Schema-check and read an already parsed tree (e.g. the part a signature covers)."""
    check_schema(root)
    return Reader(limits).package(root)


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Package:
    """Parse untrusted bytes into a package model, or raise PackageError."""
    return read_tree(parse_untrusted(data, limits), limits)


def load(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Package:
    """Parse and apply every semantic rule: the package is fit to route."""
    return check(parse(data, limits))


def load_tree(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[etree._Element, Package]:
    """Like :func:`load`, keeping comments and processing instructions, so that a
    signature can be checked on the same tree: the validator parses each package once."""
    root = parse_untrusted(data, limits, keep_comments=True)
    return root, check(read_tree(root, limits))


def build(package: Package, *, validate: bool = True) -> bytes:
    """Serialise ``package`` as UTF-8 edXML; refuse to write one the backbone would refuse."""
    if validate:
        check(package)
    return to_bytes(package)
