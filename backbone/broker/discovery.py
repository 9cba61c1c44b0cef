"""Where the demo, the benchmark and the pipeline tests find a RabbitMQ (DESIGN.md,
"Running RabbitMQ locally and in tests"), in this order:

1. the URLs given (an administrator's AMQP URL and the management API's), or else
   BACKBONE_AMQP_URL with BACKBONE_MGMT_URL;
2. a private node started here, when rabbitmq-server is installed (and stopped after);
3. otherwise :class:`~backbone.errors.BrokerNotFound`, saying what to install.

One function for the three, so that they look in the same places and say the same thing
when there is nothing to find.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from ..errors import BrokerNotFound
from .localnode import LocalNode, available

FROM_ENVIRONMENT = "set BACKBONE_AMQP_URL and BACKBONE_MGMT_URL"


class FoundBroker(NamedTuple):
    """A broker to use: its URLs (as an administrator) and the node started for it, if any."""

    amqp_url: str
    mgmt_url: str
    node: LocalNode | None


@contextmanager
def find_broker(
    amqp_url: str | None = None,
    mgmt_url: str | None = None,
    *,
    environment: bool = True,
    otherwise: str = FROM_ENVIRONMENT,
    starting: Callable[[], object] = lambda: None,
) -> Iterator[FoundBroker]:
    """The broker of ``amqp_url`` and ``mgmt_url`` (both, or neither), else of the
    environment (unless ``environment`` is off: the benchmark does not measure a production
    broker by accident), else a private node that is stopped, with its files, on exit.
    ``starting`` is called before a node is started (it takes a few seconds: say so);
    ``otherwise`` ends the message of :class:`BrokerNotFound`: how else to give a broker."""
    if not (amqp_url and mgmt_url) and environment:
        amqp_url, mgmt_url = (
            os.environ.get("BACKBONE_AMQP_URL"),
            os.environ.get("BACKBONE_MGMT_URL"),
        )
    if amqp_url and mgmt_url:
        yield FoundBroker(amqp_url, mgmt_url, None)
        return
    if not available():
        raise BrokerNotFound(
            "no RabbitMQ: install rabbitmq-server (the Debian package) so that a private "
            f"node can be started here, or {otherwise}"
        )
    starting()
    node = LocalNode().start()
    try:
        yield FoundBroker(node.amqp_url, node.mgmt_url, node)
    finally:
        node.stop()
