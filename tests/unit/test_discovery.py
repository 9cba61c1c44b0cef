"""find_broker's order: the URLs given, the environment, a private node, else what to install."""

from __future__ import annotations

import pytest

from backbone.broker import discovery, find_broker
from backbone.errors import BrokerError, BrokerNotFound

AMQP, MGMT = "amqp://u:p@broker:5672/", "http://u:p@broker:15672/"


def test_the_urls_given_come_first_and_no_node_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://other/")
    monkeypatch.setenv("BACKBONE_MGMT_URL", "http://other/")
    monkeypatch.setattr(discovery, "available", lambda: pytest.fail("no node is looked for"))
    with find_broker(AMQP, MGMT) as found:
        assert found == (AMQP, MGMT, None)


def test_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_AMQP_URL", AMQP)
    monkeypatch.setenv("BACKBONE_MGMT_URL", MGMT)
    with find_broker() as (amqp, mgmt, node):
        assert (amqp, mgmt, node) == (AMQP, MGMT, None)


def test_without_a_broker_or_rabbitmq_server_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKBONE_AMQP_URL", AMQP)
    monkeypatch.setenv("BACKBONE_MGMT_URL", MGMT)
    monkeypatch.setattr(discovery, "available", lambda: False)
    with (
        pytest.raises(BrokerNotFound, match=r"install rabbitmq-server.*give --amqp-url") as caught,
        find_broker(environment=False, otherwise="give --amqp-url and --mgmt-url"),
    ):
        pass
    assert isinstance(caught.value, BrokerError)
