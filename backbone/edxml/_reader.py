"""From a schema-valid lxml tree to package models, enforcing cardinality.

The reading is driven by the models' fields (alias = element name), so the models are
the one statement of which children a record has and how often each may occur.
Text is stripped and an empty value counts as absent, as real packages carry empty
optional elements; an element with no content at all is treated as absent too.
"""

from __future__ import annotations

import binascii
import typing
from dataclasses import dataclass
from functools import cache

from lxml import etree
from pydantic import BaseModel

from ..errors import ErrorCode, InvalidPackage, Issue
from .limits import Limits
from .models import (
    DSIG_NAMESPACE,
    NAMESPACE,
    AtLeast,
    Attachment,
    DocumentHeader,
    DocumentPackage,
    Package,
    Record,
    Reference,
    StatusHeader,
    StatusPackage,
    TraceHeaderList,
    Wrapped,
)
from .paths import ATTACHMENTS, BODY, HEADER, MANIFEST, MESSAGE_HEADER, SIGNATURE, TRACE

_NS = f"{{{NAMESPACE}}}"
_DS_SIGNATURE = f"{{{DSIG_NAMESPACE}}}Signature"


@dataclass(frozen=True, slots=True)
class _Slot:
    """How one model field is read: ``kind`` is text, record, many, wrapped or base64."""

    field: str
    tag: str
    kind: str
    required: bool
    item: type[Record] | None = None
    item_tag: str = ""
    minimum: int = 0


@cache
def _plan(model: type[Record]) -> tuple[_Slot, ...]:
    slots = []
    for name, info in model.model_fields.items():
        tag = info.alias or name
        required = info.is_required()
        annotation = info.annotation
        wrapped = next((m for m in info.metadata if isinstance(m, Wrapped)), None)
        at_least = next((m for m in info.metadata if isinstance(m, AtLeast)), None)
        if typing.get_origin(annotation) is tuple:
            item = typing.get_args(annotation)[0]
            record = item if isinstance(item, type) and issubclass(item, Record) else None
            if wrapped is not None:
                slots.append(_Slot(name, tag, "wrapped", required, record, wrapped.item))
            else:
                minimum = at_least.count if at_least else 0
                slots.append(_Slot(name, tag, "many", required, record, tag, minimum))
        elif annotation is bytes:
            slots.append(_Slot(name, tag, "base64", required))
        else:
            candidates = [
                a for a in typing.get_args(annotation) or (annotation,) if a is not type(None)
            ]
            item = candidates[0]
            if isinstance(item, type) and issubclass(item, Record):
                slots.append(_Slot(name, tag, "record", required, item))
            else:
                slots.append(_Slot(name, tag, "text", required))
    return tuple(slots)


@cache
def _slots_by_tag(model: type[Record]) -> dict[str, _Slot]:
    return {_NS + slot.tag: slot for slot in _plan(model)}


@cache
def _required(model: type[Record]) -> tuple[_Slot, ...]:
    """Slots that must end with a value: required fields, and repeats with a minimum."""
    return tuple(s for s in _plan(model) if s.required or s.minimum > 0)


def _local(element: etree._Element) -> str:
    tag = element.tag
    assert isinstance(tag, str)
    return tag[len(_NS) :] if tag.startswith(_NS) else tag


def _children(element: etree._Element) -> dict[str, list[etree._Element]]:
    """Element children grouped by tag: the local name for ours, ``{uri}name`` for any
    other namespace, so ``ds:XXXXXTraceHeaderList`` is never read as TraceHeaderList."""
    groups: dict[str, list[etree._Element]] = {}
    for child in element.iterchildren(etree.Element):
        tag = str(child.tag)
        groups.setdefault(tag[len(_NS) :] if tag.startswith(_NS) else tag, []).append(child)
    return groups


def _check_header(header: dict[str, list[etree._Element]]) -> None:
    """edXMLHeader holds, besides its own elements, one Signature and nothing else: an
    XML-DSig one, or the namespace-less one some SDK demos write (the signing layer
    refuses that as unsigned). The schema admits any XML-DSig element there."""
    signatures = [*header.pop("Signature", ()), *header.pop(_DS_SIGNATURE, ())]
    if len(signatures) > 1:
        raise InvalidPackage(
            Issue.of(
                ErrorCode.TOO_MANY,
                SIGNATURE,
                f"edXMLHeader holds one Signature, found {len(signatures)}",
            )
        )
    for tag in header:
        if tag.startswith("{"):
            uri, _, local = tag[1:].partition("}")
            raise InvalidPackage(
                Issue.of(
                    ErrorCode.UNEXPECTED,
                    f"{HEADER}/{local}",
                    f"{local} (namespace {uri}) does not belong in edXMLHeader: "
                    "only one XML-DSig Signature does",
                )
            )


def _text(element: etree._Element) -> str | None:
    # A leaf holds children only when comments or PIs were kept (signature checking):
    # its value is then the text around them, as canonical XML without comments has it.
    text = element.text if len(element) == 0 else "".join(map(str, element.itertext()))
    if text is None:
        return None
    return text.strip() or None


def _indexed(path: str, tag: str, index: int, count: int) -> str:
    return f"{path}/{tag}[{index + 1}]" if count > 1 else f"{path}/{tag}"


def _missing(path: str, message: str) -> InvalidPackage:
    return InvalidPackage(Issue.of(ErrorCode.MISSING, path, message))


class Reader:
    """Reads one tree; holds the limits the attachments are checked against."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def package(self, root: etree._Element) -> Package:
        groups = _children(root)
        envelope = groups["edXMLEnvelope"][0]
        parts = _children(envelope)
        header = _children(parts["edXMLHeader"][0])
        _check_header(header)
        message_header = header["MessageHeader"][0]
        trace_elements = header.get("TraceHeaderList", ())
        trace = self.record(TraceHeaderList, trace_elements[0], TRACE) if trace_elements else None
        is_status = any(
            _local(c) == "StatusCode" for c in message_header.iterchildren(etree.Element)
        )
        if is_status:
            for extra, path in (
                ("edXMLBody", BODY),
                ("AttachmentEncoded", ATTACHMENTS),
            ):
                if extra in parts or extra in groups:
                    raise InvalidPackage(
                        Issue.of(
                            ErrorCode.UNEXPECTED,
                            path,
                            f"a status package (it has a StatusCode) carries no {extra}",
                        )
                    )
            status_header = self.required(StatusHeader, message_header, MESSAGE_HEADER)
            return StatusPackage(header=status_header, trace=trace)
        document_header = self.required(DocumentHeader, message_header, MESSAGE_HEADER)
        version, references = "1.0", ()
        if "edXMLBody" in parts:
            manifest = _children(parts["edXMLBody"][0])["edXMLManifest"][0]
            version = str(manifest.get("version", "")).strip()
            found = manifest.findall(f"{_NS}Reference")
            references = tuple(
                self.required(Reference, el, _indexed(MANIFEST, "Reference", i, len(found)))
                for i, el in enumerate(found)
            )
        attachments: tuple[Attachment, ...] = ()
        if "AttachmentEncoded" in groups:
            found = groups["AttachmentEncoded"][0].findall(f"{_NS}Attachment")
            attachments = tuple(
                self.required(Attachment, el, _indexed(ATTACHMENTS, "Attachment", i, len(found)))
                for i, el in enumerate(found)
            )
        return DocumentPackage(
            header=document_header,
            trace=trace,
            manifest_version=version,
            references=references,
            attachments=attachments,
        )

    def required(self, model: type[Record], element: etree._Element, path: str) -> typing.Any:
        value = self.record(model, element, path)
        if value is None:
            raise _missing(path, f"{_local(element)} has no content")
        return value

    def record(self, model: type[Record], element: etree._Element, path: str) -> BaseModel | None:
        """Read one record in a single pass over its children; None if it has no content."""
        by_tag = _slots_by_tag(model)
        values: dict[str, object] = {}
        seen: set[str] = set()
        repeated: dict[_Slot, list[etree._Element]] = {}
        for child in element.iterchildren(etree.Element):
            slot = by_tag.get(child.tag)
            if slot is None:
                tag = _local(child)
                raise InvalidPackage(
                    Issue.of(
                        ErrorCode.UNEXPECTED,
                        f"{path}/{tag}",
                        f"{tag} does not belong in {_describe(model)}",
                    )
                )
            if slot.kind == "many":
                repeated.setdefault(slot, []).append(child)
                continue
            if slot.tag in seen:
                count = sum(1 for c in element.iterchildren(child.tag))
                raise InvalidPackage(
                    Issue.of(
                        ErrorCode.TOO_MANY,
                        f"{path}/{slot.tag}",
                        f"{slot.tag} may occur once in {_local(element)}, found {count}",
                    )
                )
            seen.add(slot.tag)
            value = self._value(slot, child, path)
            if value is None or value == ():
                if slot.required:
                    raise _missing(f"{path}/{slot.tag}", f"{slot.tag} is empty")
                continue
            values[slot.field] = value
        for slot, found in repeated.items():
            assert slot.item is not None
            items = (
                self.record(slot.item, el, _indexed(path, slot.tag, i, len(found)))
                for i, el in enumerate(found)
            )
            present = tuple(item for item in items if item is not None)
            if present:
                values[slot.field] = present
        for slot in _required(model):
            if slot.field in values:
                continue
            if slot.kind == "many":
                raise _missing(
                    f"{path}/{slot.tag}",
                    f"{_local(element)} needs at least {slot.minimum} {slot.tag} with content",
                )
            raise _missing(f"{path}/{slot.tag}", f"{_local(element)} has no {slot.tag}")
        if not values:
            return None
        return model(**values)

    def _value(self, slot: _Slot, element: etree._Element, parent: str) -> object:
        if slot.kind == "text":
            return _text(element)
        path = f"{parent}/{slot.tag}"
        if slot.kind == "record":
            assert slot.item is not None
            return self.record(slot.item, element, path)
        if slot.kind == "wrapped":
            found = element.findall(f"{_NS}{slot.item_tag}")
            if slot.item is None:
                texts = (_text(el) for el in found)
                return tuple(t for t in texts if t is not None)
            records = (
                self.record(slot.item, el, _indexed(path, slot.item_tag, i, len(found)))
                for i, el in enumerate(found)
            )
            return tuple(r for r in records if r is not None)
        return self._base64(element, path)

    def _base64(self, element: etree._Element, path: str) -> bytes:
        text = "".join((_text(element) or "").split())
        limit = self.limits.max_attachment_bytes
        if len(text) // 4 * 3 > limit + 2:
            raise InvalidPackage(
                Issue.of(
                    ErrorCode.ATTACHMENT_TOO_LARGE,
                    path,
                    f"the attachment decodes to about {len(text) // 4 * 3} bytes, "
                    f"over the limit of {limit}",
                )
            )
        try:
            if len(text) % 4:
                raise ValueError(f"length {len(text)} is not a multiple of 4")
            data = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidPackage(
                Issue.of(
                    ErrorCode.BAD_BASE64, path, f"the content is not valid base64: {exc}", text
                )
            ) from None
        if len(data) > limit:
            raise InvalidPackage(
                Issue.of(
                    ErrorCode.ATTACHMENT_TOO_LARGE,
                    path,
                    f"the attachment is {len(data)} bytes, over the limit of {limit}",
                )
            )
        return data


def _describe(model: type[Record]) -> str:
    if model is DocumentHeader:
        return "the MessageHeader of a document package"
    if model is StatusHeader:
        return "the MessageHeader of a status package (it has a StatusCode)"
    return model.__name__
