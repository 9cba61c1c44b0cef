"""The document-exchange backbone: edXML packages between government agencies over RabbitMQ.

Public entry points: the gateway SDK (:class:`AsyncGateway`, :class:`Gateway`, the
:class:`Delivery` they hand over, :class:`SendError`), :mod:`backbone.edxml` (the format
layer), :class:`AgencyCode`, and the bases of the exceptions in :mod:`backbone.errors`.
"""

from typing import TYPE_CHECKING

from .agency import AgencyCode, AgencyCodeError
from .errors import BackboneError, BrokerError, ErrorCode, Issue, PackageError, SignatureError

if TYPE_CHECKING:
    from .client import AsyncGateway, Delivery, Gateway, SendError

__version__ = "0.1.0"

__all__ = [
    "AgencyCode",
    "AgencyCodeError",
    "AsyncGateway",
    "BackboneError",
    "BrokerError",
    "Delivery",
    "ErrorCode",
    "Gateway",
    "Issue",
    "PackageError",
    "SendError",
    "SignatureError",
    "__version__",
]

_SDK = ("AsyncGateway", "Delivery", "Gateway", "SendError")


def __getattr__(name: str) -> object:
    """The SDK on first use: it loads the AMQP libraries, which the format layer and
    ``backbone --help`` do without."""
    if name in _SDK:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SDK})
