"""deploy/rabbitmq boots: a node with its configuration (TLS only) loads its definitions.

A node of its own (the configuration closes the plain listeners), certificates made here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backbone.broker import localnode, topology

pytestmark = pytest.mark.pipeline
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq"
ADMIN, PASSWORD = "deploy-admin", "deploy-secret"


def _certificates(directory: Path) -> None:
    """ca.pem, server.pem and server.key for 127.0.0.1."""
    now = datetime.now(UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[str, ec.EllipticCurvePrivateKey],
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )
        if subject == issuer[0]:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), False
            )
        return builder.sign(issuer[1], hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = certificate("backbone test CA", ca_key, ("backbone test CA", ca_key))
    server = certificate("localhost", server_key, ("backbone test CA", ca_key))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class DeployedNode(localnode.LocalNode):
    """A private node configured by deploy/rabbitmq/rabbitmq.conf, paths and ports moved."""

    def _write_config(self) -> None:
        super()._write_config()
        tls = self.base / "tls"
        tls.mkdir(exist_ok=True)
        _certificates(tls)
        conf = (DEPLOY / "rabbitmq.conf").read_text()
        conf = conf.replace("/etc/rabbitmq/tls", str(tls))
        conf = conf.replace("/etc/rabbitmq/definitions.json", str(DEPLOY / "definitions.json"))
        conf = conf.replace("= 5671", f"= {self.amqp_port}").replace(
            "= 15671", f"= {self.mgmt_port}"
        )
        conf += f"\nprometheus.tcp.port = {self.prometheus_port}\nlog.console = false\n"
        (self.base / "rabbitmq.conf").write_text(conf)


@pytest.fixture(scope="module")
def node() -> Iterator[DeployedNode]:
    if not localnode.available():
        pytest.skip("rabbitmq-server is not installed: no node to boot the deployment on")
    deployed = DeployedNode()
    deployed.start()
    try:
        deployed.ctl("add_user", ADMIN, PASSWORD, check=True)
        deployed.ctl("set_user_tags", ADMIN, "administrator", check=True)
        deployed.ctl("set_permissions", "-p", "/", ADMIN, ".*", ".*", ".*", check=True)
        yield deployed
    finally:
        deployed.stop()


def test_the_deployment_loads_the_definitions_behind_tls(node: DeployedNode) -> None:
    context = ssl.create_default_context(cafile=str(node.base / "tls" / "ca.pem"))
    api = f"https://localhost:{node.mgmt_port}/api"
    with httpx.Client(base_url=api, auth=(ADMIN, PASSWORD), verify=context) as client:
        queues = {q["name"] for q in client.get("/queues/%2F").json()}
        users = {u["name"]: u for u in client.get("/users").json()}
        workers = client.get("/permissions/%2F/backbone").json()
        assert client.get("/whoami").json()["name"] == ADMIN
    assert {topology.VALIDATE, topology.TRACKER, topology.QUARANTINE} <= queues
    assert "guest" not in users  # loading definitions makes no default user
    assert users["operators"]["tags"] == ["monitoring"]
    assert workers["write"] == "^(edoc\\.deliver|backbone\\.events)$"

    async def over_amqps() -> int:
        connection = await aio_pika.connect(
            f"amqps://{ADMIN}:{PASSWORD}@localhost:{node.amqp_port}/", ssl_context=context
        )
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(topology.VALIDATE, passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await connection.close()

    assert asyncio.run(over_amqps()) == 0
