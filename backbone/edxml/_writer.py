"""From package models to edXML bytes: the inverse of the reader, driven by the same plan."""

from __future__ import annotations

import base64

from lxml import etree
from pydantic import BaseModel

from ._reader import _plan
from .models import NAMESPACE, DocumentPackage, Package, Record

_NS = f"{{{NAMESPACE}}}"
_NSMAP = {"edXML": NAMESPACE}


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, _NS + tag)
    if text is not None:
        element.text = text
    return element


def _record(parent: etree._Element, tag: str, model: BaseModel) -> None:
    assert isinstance(model, Record)
    element = _sub(parent, tag)
    for slot in _plan(type(model)):
        value = getattr(model, slot.field)
        if value is None or value == ():
            continue
        if slot.kind == "text":
            _sub(element, slot.tag, value)
        elif slot.kind == "record":
            _record(element, slot.tag, value)
        elif slot.kind == "many":
            for item in value:
                _record(element, slot.tag, item)
        elif slot.kind == "wrapped":
            wrapper = _sub(element, slot.tag)
            for item in value:
                if slot.item is None:
                    _sub(wrapper, slot.item_tag, item)
                else:
                    _record(wrapper, slot.item_tag, item)
        else:
            _sub(element, slot.tag, base64.b64encode(value).decode("ascii"))


def to_tree(package: Package) -> etree._Element:
    """The package as an lxml tree (the signing layer adds its Signature to it)."""
    root = etree.Element(_NS + "edXML", nsmap=_NSMAP)
    envelope = _sub(root, "edXMLEnvelope")
    header = _sub(envelope, "edXMLHeader")
    _record(header, "MessageHeader", package.header)
    if package.trace is not None:
        _record(header, "TraceHeaderList", package.trace)
    if isinstance(package, DocumentPackage):
        manifest = _sub(_sub(envelope, "edXMLBody"), "edXMLManifest")
        manifest.set("version", package.manifest_version)
        for reference in package.references:
            _record(manifest, "Reference", reference)
        if package.attachments:
            encoded = _sub(root, "AttachmentEncoded")
            for attachment in package.attachments:
                _record(encoded, "Attachment", attachment)
    return root


def to_bytes(package: Package) -> bytes:
    return etree.tostring(to_tree(package), xml_declaration=True, encoding="UTF-8")
