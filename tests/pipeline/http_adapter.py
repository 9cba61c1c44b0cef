"""The HTTP adapter as a process on a real broker: its gateway, its credentials, a client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from adapters.http import credentials
from adapters.http.credentials import Vault
from adapters.http.signing import HmacAuth
from backbone.store import Store

from ..conftest import Signer
from .conftest import PASSWORD, Pipeline

GATEWAY = "dms-http"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Adapter:
    """A running ``backbone adapter http`` and what a test needs to call it."""

    process: subprocess.Popen[bytes]
    base_url: str
    vault_key: str
    log: Path
    database_url: str

    async def credential(self, *agencies: str) -> HmacAuth:
        """A new credential for ``agencies``, as `adapter credentials add` makes one."""
        store = Store(self.database_url)
        try:
            async with store.transaction() as session:
                key_id, secret = await credentials.add(session, Vault(self.vault_key), agencies)
        finally:
            await store.close()
        return HmacAuth(key_id, secret)

    verify: ssl.SSLContext | bool = True  # what trusts a TLS adapter's certificate

    def client(self, auth: HmacAuth | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, auth=auth, timeout=30.0, verify=self.verify
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def environment(pipeline: Pipeline, vault_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BACKBONE_AMQP_URL": pipeline.settings.amqp_url,
            "BACKBONE_DATABASE_URL": pipeline.settings.database_url,
            "BACKBONE_REGISTRY_TTL": "0",
            "BACKBONE_ADAPTER_KEY": vault_key,
            "BACKBONE_ADAPTER_PASSWORD": PASSWORD,
        }
    )
    return env


async def start_adapter(
    pipeline: Pipeline,
    log: Path,
    *,
    vault_key: str | None = None,
    port: int | None = None,
    tls: tuple[Path, Path] | None = None,
    signers: Sequence[Signer] = (),
) -> Adapter:
    """Start it on a free port (with ``tls``, a certificate and key: over HTTPS; holding
    the keys of ``signers``) and wait until /health says it is consuming."""
    vault_key = vault_key or Vault.new_key()
    port = port or free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "backbone", "adapter", "http", "--gateway", GATEWAY),
                *("--port", str(port), "--lock", "30"),
                *(("--tls-cert", str(tls[0]), "--tls-key", str(tls[1])) if tls else ()),
                *(a for s in signers for a in ("--signer", f"{s.key_path}:{s.cert_path}")),
            ],
            env=environment(pipeline, vault_key),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    scheme = "https" if tls else "http"
    adapter = Adapter(
        process, f"{scheme}://127.0.0.1:{port}", vault_key, log, pipeline.settings.database_url
    )
    if tls:
        adapter.verify = ssl.create_default_context(cafile=str(tls[0]))
    deadline = time.monotonic() + START_TIMEOUT
    async with adapter.client() as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the adapter ended: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return adapter
            if time.monotonic() > deadline:
                adapter.stop()
                raise AssertionError(f"the adapter never became healthy: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_adapter(
    pipeline: Pipeline, log: Path, signers: Sequence[Signer] = ()
) -> AsyncIterator[Adapter]:
    adapter = await start_adapter(pipeline, log, signers=signers)
    try:
        yield adapter
    finally:
        adapter.stop()


class WebhookTarget:
    """A system's webhook endpoint: records each call (headers, body), answers 204."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/backbone-calls"

    def start(self) -> None:
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
