"""The grants, read as RabbitMQ reads them; password hashes; the definitions export."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from backbone.agency import topic_matches
from backbone.broker import definitions, topology
from backbone.broker.access import (
    agency_grant,
    allows,
    differences,
    evaluate,
    gateway_grant,
    key_regex,
    operators_grant,
    workers_grant,
)
from backbone.broker.provisioning import SHA256, password_matches

CODES = [
    "000.00.00.H41",
    "000.00.15.H41",
    "001.03.15.H41",
    "000.00.15.H42",
    "000.00.00.G22",
    "H41",
    "000.00.15.H41.extra",
    "000.00.15xH41",
]


@pytest.mark.parametrize(
    "pattern", ["*.*.*.H41", "*.*.15.H41", "#.H41", "000.#", "#", "000.00.15.H41", "*.#.H41"]
)
def test_a_routing_key_pattern_admits_exactly_the_identifiers_its_topic_matches(
    pattern: str,
) -> None:
    regex = f"^{key_regex(pattern)}$"
    for code in CODES:
        four_words = len(code.split(".")) == 4
        expected = four_words and topic_matches(pattern, code)
        assert allows(regex, code) == expected, (pattern, code)


def test_an_agency_may_publish_as_itself_and_read_its_own_inbox_only() -> None:
    grant = agency_grant("000.00.15.H41")
    assert grant.configure == ""
    assert allows(grant.write, topology.SUBMIT)
    for other in (topology.DELIVER, topology.EVENTS, topology.DLX, "edoc.submitx", "xedoc.submit"):
        assert not allows(grant.write, other)
    assert allows(grant.read, "inbox.000.00.15.H41")
    for other in ("inbox.000.00.15.H42", "inbox.000.00.15.H41x", topology.VALIDATE):
        assert not allows(grant.read, other)
    keys = grant.topic[topology.SUBMIT]
    assert allows(keys, "000.00.15.H41") and not allows(keys, "000.00.16.H41")


def test_a_gateway_reads_its_queue_and_the_inboxes_it_serves() -> None:
    grant = gateway_grant("lgsp-h41", ["*.*.*.H41", "000.00.00.G22"])
    assert allows(grant.read, "gateway.lgsp-h41")
    assert allows(grant.read, "inbox.001.03.15.H41") and allows(grant.read, "inbox.000.00.00.G22")
    assert not allows(grant.read, "gateway.lgsp-h42") and not allows(
        grant.read, "inbox.000.00.00.H42"
    )
    keys = grant.topic[topology.SUBMIT]
    assert allows(keys, "001.03.15.H41") and not allows(keys, "001.03.15.H42")


def test_only_the_workers_publish_deliveries_and_events_and_operators_touch_nothing() -> None:
    workers = workers_grant()
    assert allows(workers.write, topology.DELIVER) and allows(workers.write, topology.EVENTS)
    assert not allows(workers.write, topology.SUBMIT)
    assert not allows(workers.read, "inbox.000.00.15.H41")
    for grant in (agency_grant("000.00.15.H41"), gateway_grant("g", ["#"])):
        assert not allows(grant.write, topology.DELIVER) and not allows(
            grant.write, topology.EVENTS
        )
    operators = operators_grant()
    assert operators.tags == ("monitoring",)
    assert not any(allows(p, topology.VALIDATE) for p in operators.permissions().values())


def test_an_empty_pattern_admits_nothing_and_others_search_unanchored() -> None:
    assert not allows("", "anything")
    assert allows("submit", "edoc.submit")  # as RabbitMQ does: hence the anchors in grants
    assert not allows("(", "x")  # unreadable here: no, rather than a crash


def test_evaluate_and_differences_read_what_the_broker_reports() -> None:
    grant = agency_grant("000.00.15.H41")
    broker = {"user": "000.00.15.H41", "vhost": "/", **grant.permissions()}
    topic = [{"exchange": topology.SUBMIT, "write": grant.topic[topology.SUBMIT], "read": ""}]
    resources = evaluate(
        broker, topic, [topology.SUBMIT, topology.DELIVER], ["inbox.000.00.15.H41", "inbox.x"]
    )
    allowed = {(r.name, r.write, r.read) for r in resources}
    assert (topology.SUBMIT, True, False) in allowed
    assert (topology.DELIVER, False, False) in allowed
    assert ("inbox.000.00.15.H41", False, True) in allowed and ("inbox.x", False, False) in allowed
    limits = {"max-connections": 20, "max-channels": 200}
    assert differences(grant, broker, topic, [], limits) == []
    widened = {**broker, "read": ".*"}
    assert differences(grant, widened, topic, [], limits) == [
        f"read is '.*', expected {grant.read!r}"
    ]
    assert differences(grant, broker, topic, [], {"max-connections": 20}) == [
        "max-channels is none, expected 200"
    ]
    assert differences(workers_grant(), workers_grant().permissions(), [], [], limits) == [
        "max-channels is 200, expected none",
        "max-connections is 20, expected none",
    ]
    assert "routing keys on edoc.submit are unrestricted" in differences(grant, broker, [], [])[0]
    assert differences(grant, None, topic, [], limits) == ["no permissions on the virtual host"]
    nothing = {"configure": "", "write": "", "read": ""}
    assert differences(operators_grant(), nothing, [], []) == ["tags lack monitoring"]
    assert differences(grant, broker, topic, ["impersonator"], limits) == [
        "unexpected tags impersonator"  # it could set any user_id
    ]


def _hash(password: str, salt: bytes = b"\x01\x02\x03\x04") -> dict[str, object]:
    digest = hashlib.sha256(salt + password.encode()).digest()
    return {"password_hash": base64.b64encode(salt + digest).decode(), "hashing_algorithm": SHA256}


def test_a_password_is_compared_with_rabbitmqs_salted_hash() -> None:
    user = _hash("s3cret")
    assert password_matches(user, "s3cret")
    assert not password_matches(user, "s3cret ")
    assert not password_matches({"password_hash": "", "hashing_algorithm": SHA256}, "")
    assert not password_matches({**user, "hashing_algorithm": "rabbit_password_hashing_md5"}, "x")
    assert not password_matches({**user, "password_hash": "not base64!"}, "s3cret")


def test_the_export_keeps_one_virtual_host_and_no_secret() -> None:
    full = {
        "rabbit_version": "3.10.8",
        "vhosts": [{"name": "/"}, {"name": "other"}],
        "users": [
            {"name": "guest", "password_hash": "h", "tags": ["administrator"]},
            {
                "name": "000.00.15.H41",
                "password_hash": "h",
                "hashing_algorithm": SHA256,
                "tags": [],
            },
            {"name": "elsewhere", "password_hash": "h", "tags": []},
        ],
        "permissions": [
            {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "000.00.15.H41", "vhost": "/", "configure": "", "write": "w", "read": "r"},
            {"user": "elsewhere", "vhost": "other", "configure": "", "write": "", "read": ""},
        ],
        "topic_permissions": [
            {"user": "000.00.15.H41", "vhost": "/", "exchange": "edoc.submit", "write": "k"}
        ],
        "queues": [
            {"name": "b", "vhost": "/"},
            {"name": "a", "vhost": "/"},
            {"name": "c", "vhost": "other"},
        ],
        "exchanges": [{"name": "edoc.submit", "vhost": "/"}],
        "bindings": [],
        "policies": [],
        "parameters": [],
    }
    exported = definitions.export(full, "/")
    assert [u["name"] for u in exported["users"]] == ["000.00.15.H41"]
    assert not re.search("password_hash|hashing_algorithm", str(exported))
    assert [q["name"] for q in exported["queues"]] == ["a", "b"]
    assert exported["vhosts"] == [{"name": "/"}]
    assert [p["user"] for p in exported["permissions"]] == ["000.00.15.H41"]
    assert len(exported["topic_permissions"]) == 1


# --- which queue serves an agency: one, whatever registers it -----------------------------

PROVINCE = ("lgsp-h41", ["*.*.*.H41"])
DISTRICT = ("lgsp-h41-15", ["*.*.15.H41"])
EVERYONE = ("national", ["#"])


@pytest.mark.parametrize(
    ("code", "own_principal", "gateways", "queue"),
    [
        # an agency's own principal wins over any gateway
        ("000.00.00.H41", True, [PROVINCE], "inbox.000.00.00.H41"),
        ("000.00.00.H41", True, [], "inbox.000.00.00.H41"),
        # a gateway wins over a bare (imported, no broker user) agency's inbox
        ("000.00.00.H41", False, [PROVINCE], "gateway.lgsp-h41"),
        ("000.00.00.H42", False, [PROVINCE], "inbox.000.00.00.H42"),  # not covered
        ("000.00.00.H42", False, [], "inbox.000.00.00.H42"),  # waits for a user
        # overlapping gateways: the most specific pattern, then the first name
        ("000.00.15.H41", False, [PROVINCE, DISTRICT], "gateway.lgsp-h41-15"),
        ("000.00.16.H41", False, [PROVINCE, DISTRICT], "gateway.lgsp-h41"),
        ("000.00.16.H41", False, [EVERYONE, PROVINCE], "gateway.lgsp-h41"),
        ("000.00.16.H42", False, [EVERYONE, PROVINCE], "gateway.national"),
        ("000.00.16.H41", False, [("b", ["*.*.*.H41"]), ("a", ["*.*.*.H41"])], "gateway.a"),
    ],
)
def test_each_agency_is_served_by_exactly_one_queue(
    code: str, own_principal: bool, gateways: list[tuple[str, list[str]]], queue: str
) -> None:
    assert topology.serving_queue(code, own_principal, gateways) == queue


def test_route_changes_leave_one_binding_per_agency_and_drop_the_stale_ones() -> None:
    wanted = {"000.00.00.H41": "inbox.000.00.00.H41", "000.00.15.H41": "gateway.lgsp-h41"}
    current = [
        ("inbox.000.00.00.H41", "000.00.00.H41"),  # kept
        ("gateway.lgsp-h41", "*.*.*.H41"),  # a pattern binding of an older version
        ("inbox.000.00.15.H41", "000.00.15.H41"),  # now served by the gateway
        (topology.VALIDATE, "#"),  # not a delivery queue: not the registry's business
    ]
    bind, unbind = topology.route_changes(wanted, current)
    assert bind == {("gateway.lgsp-h41", "000.00.15.H41")}
    assert unbind == {
        ("gateway.lgsp-h41", "*.*.*.H41"),
        ("inbox.000.00.15.H41", "000.00.15.H41"),
    }
    assert topology.route_changes(wanted, [(q, c) for c, q in wanted.items()]) == (set(), set())
