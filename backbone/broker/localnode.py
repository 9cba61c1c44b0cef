"""A private RabbitMQ node beside the system one, for tests and the demo.

It has its own node name, AMQP, distribution, management and Prometheus ports, its own
config, plugins file, data and log directories and Erlang cookie. The Debian wrapper
script drops to the ``rabbitmq`` user when started as root; the node is started through
the script behind it instead, as the current user, who owns every directory it uses.
Boots in about six seconds; ``kill`` and ``start`` again serve reliability tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackboneError

_SERVER_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server",)
_CTL_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmqctl",)


# just above the largest package (BACKBONE_MAX_PACKAGE_BYTES, 32 MiB) and its headers
MAX_MESSAGE_SIZE = 33 * 1024 * 1024


class LocalNodeError(BackboneError):
    """The private node could not be started (what to install, or what it said)."""


def _find(candidates: tuple[str, ...], name: str) -> str | None:
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def available() -> bool:
    """Is ``rabbitmq-server`` installed here?"""
    return _find(_SERVER_CANDIDATES, "rabbitmq-server") is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    """Does something listen on this port of 127.0.0.1?"""
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalNode:
    """One private node; ``start()`` it, use ``amqp_url`` and ``mgmt_url``, ``stop()`` it."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="backbone-rmq-")))
    name: str = field(default_factory=lambda: f"backbone-{uuid.uuid4().hex[:8]}@localhost")
    amqp_port: int = field(default_factory=free_port)
    mgmt_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def mgmt_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.mgmt_port}/"

    @property
    def running(self) -> bool:
        """Both its AMQP and its management ports answer."""
        return port_open(self.amqp_port) and port_open(self.mgmt_port)

    def environment(self) -> dict[str, str]:
        """The environment of its processes (``rabbitmq-server``, ``rabbitmqctl``)."""
        env = dict(os.environ)
        env.update(
            {
                "HOME": str(self.base),  # the node's own Erlang cookie lives here
                "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
                "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.amqp_port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
            }
        )
        return env

    def _write_config(self) -> None:
        for directory in ("mnesia", "log"):
            (self.base / directory).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_prometheus].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.mgmt_port}\n"
            f"prometheus.tcp.port = {self.prometheus_port}\n"
            "loopback_users = none\n"
            f"max_message_size = {MAX_MESSAGE_SIZE}\n"
            "log.console = false\n"
        )

    def start(self, timeout: float = 90.0) -> LocalNode:
        server = _find(_SERVER_CANDIDATES, "rabbitmq-server")
        if server is None:
            raise LocalNodeError(
                "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
            )
        self._write_config()
        log = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [server],
            env=self.environment(),
            cwd=self.base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalNodeError(f"the node exited: {self._tail()}")
            if self.running:
                return self
            time.sleep(0.25)
        self.kill()
        raise LocalNodeError(f"the node did not open its ports in {timeout:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        path = self.base / "server.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole node (the Erlang VM and its helpers): a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
        deadline = time.monotonic() + 15  # the VM's sockets outlive the script by a moment
        while time.monotonic() < deadline and (
            port_open(self.amqp_port) or port_open(self.mgmt_port)
        ):
            time.sleep(0.1)

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node."""
        ctl = _find(_CTL_CANDIDATES, "rabbitmqctl")
        if ctl is None:
            raise LocalNodeError("rabbitmqctl is not installed (it comes with rabbitmq-server)")
        return subprocess.run(
            [ctl, "-n", self.name, *args],
            env=self.environment(),
            capture_output=True,
            timeout=60,
            check=check,
        )

    def shutdown(self) -> None:
        """Stop the node cleanly (falling back to a kill), keeping its data for a restart."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(LocalNodeError, subprocess.TimeoutExpired):
                self.ctl("stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self.kill()

    def stop(self) -> None:
        """Stop the node and remove its files."""
        self.shutdown()
        shutil.rmtree(self.base, ignore_errors=True)
