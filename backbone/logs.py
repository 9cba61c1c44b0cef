"""structlog, configured once per process: JSON lines for services, readable for the CLI.

Loggers carry context with ``log.bind(document_id=..., agency=...)`` so every line about
a package says which document and agency it concerns.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_configured = False


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (test runners and CLI runners
    swap it; a stream captured at configuration time may be closed by then)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: Literal["json", "console"], level: str = "INFO", *, again: bool = False) -> None:
    """Set up structlog (and stdlib logging beneath it); later calls are ignored, unless
    ``again`` (a command that turns out to be a service, before it has logged anything)."""
    global _configured
    if _configured and not again:
        return
    _configured = True
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=level,
        stream=_CurrentStderr(),
        format="%(name)s %(levelname)s %(message)s",
        force=again,
    )
    chatty = ["httpx", "httpcore"]  # a line per management API request is noise
    if fmt == "console":  # a command's stderr is for its own lines and its error
        chatty += ["aio_pika", "aiormq", "pika", "alembic"]
    for name in chatty:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
