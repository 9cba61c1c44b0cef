"""The recipients: one process in which each recipient agency's SDK consumes its inbox,
notes when each package reached its hands, and answers status 01 (signed with its key)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

from .. import loop, signing
from ..broker import topology
from ..client import AsyncGateway, Delivery

Arrivals = dict[tuple[str, str], float]  # (DocumentId, recipient) -> monotonic seconds


async def _serve(
    agencies: dict[str, tuple[str, str, str]],
    prefetch: int,
    ready: Any,
    stop_signal: Any,
    count: Any,
) -> Arrivals:
    arrived: Arrivals = {}
    stop = asyncio.Event()
    gateways = [
        AsyncGateway(
            url,
            username=code,
            key=signing.load_private_key(key),
            certificates=signing.load_certificates(certificate),
            auto_arrived=False,  # the handler answers 01, once it has noted the time
        )
        for code, (url, key, certificate) in agencies.items()
    ]

    def handler_for(gateway: AsyncGateway) -> Any:
        async def answer(delivery: Delivery) -> None:
            arrived[(delivery.package.document_id or "", gateway.username)] = time.monotonic()
            with count.get_lock():
                count.value += 1
            await gateway.send_status(delivery, "01", "Đã đến")

        return answer

    for gateway in gateways:
        await gateway.__aenter__()
    try:
        serving = [
            asyncio.create_task(
                gateway.serve(
                    topology.inbox(gateway.username),
                    handler_for(gateway),
                    stop=stop,
                    prefetch=prefetch,
                )
            )
            for gateway in gateways
        ]
        await asyncio.sleep(0.2)  # the consumers are registered
        ready.set()
        stopping = asyncio.ensure_future(asyncio.to_thread(stop_signal.wait))
        await asyncio.wait([stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*serving)  # a consumer that failed ends the process with its error
        await stopping
    finally:
        for gateway in gateways:
            await gateway.__aexit__(None, None, None)
    return arrived


def _main(
    agencies: dict[str, tuple[str, str, str]],
    prefetch: int,
    ready: Any,
    stop: Any,
    out: Any,
    count: Any,
) -> None:
    out.put(loop.run(_serve(agencies, prefetch, ready, stop, count)))


@dataclass
class Recipients:
    """``agencies``: code -> (broker URL as that agency, key file, certificate file)."""

    agencies: dict[str, tuple[str, str, str]]
    prefetch: int = 64

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready, self._stop, self._out = context.Event(), context.Event(), context.Queue()
        self._count = context.Value("q", 0)
        self.process = context.Process(
            target=_main,
            args=(self.agencies, self.prefetch, self._ready, self._stop, self._out, self._count),
            daemon=True,
        )
        self.process.start()
        if not self._ready.wait(60):
            self.close()
            raise RuntimeError("the recipients' process did not start")

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def arrived(self) -> int:
        """Packages in the recipients' hands so far."""
        return int(self._count.value)

    def check_alive(self) -> None:
        if not self.process.is_alive():
            raise RuntimeError(
                f"the recipients' process exited ({self.process.exitcode}); its error is above"
            )

    def stop(self) -> Arrivals:
        self._stop.set()
        arrived: Arrivals = self._out.get(timeout=60)
        self.process.join(timeout=10)
        return arrived

    def close(self) -> None:
        """End the process, whatever it was doing (it has ended already after ``stop``)."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
