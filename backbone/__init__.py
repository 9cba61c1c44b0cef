"""The document-exchange backbone: edXML packages between government agencies over RabbitMQ.

Public entry points: :mod:`backbone.edxml` (the format layer), :class:`backbone.AgencyCode`,
and the exceptions in :mod:`backbone.errors`.
"""

from .agency import AgencyCode, AgencyCodeError
from .errors import BackboneError, ErrorCode, Issue, PackageError

__version__ = "0.1.0"

__all__ = [
    "AgencyCode",
    "AgencyCodeError",
    "BackboneError",
    "ErrorCode",
    "Issue",
    "PackageError",
    "__version__",
]
