"""Where things are in an edXML package: the paths that errors name (``Issue.path``).

Paths are part of the contract (gateways read them in refusals), so every module builds
its paths from these; an element repeated in its parent is named with its position,
``.../To[2]/OrganId``.
"""

ROOT = "/edXML"
ENVELOPE = f"{ROOT}/edXMLEnvelope"
HEADER = f"{ENVELOPE}/edXMLHeader"
MESSAGE_HEADER = f"{HEADER}/MessageHeader"
SENDER = f"{MESSAGE_HEADER}/From/OrganId"
RECIPIENTS = f"{MESSAGE_HEADER}/To"
RECIPIENT = f"{RECIPIENTS}/OrganId"
DOCUMENT_ID = f"{MESSAGE_HEADER}/DocumentId"
TRACE = f"{HEADER}/TraceHeaderList"
SIGNATURE = f"{HEADER}/Signature"
BODY = f"{ENVELOPE}/edXMLBody"
MANIFEST = f"{BODY}/edXMLManifest"
ATTACHMENTS = f"{ROOT}/AttachmentEncoded"
