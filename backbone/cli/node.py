"""``backbone node``: a private RabbitMQ node, with its dashboard, that stays up until stopped.

The system RabbitMQ of a Debian machine runs without the management plugin, which the
backbone needs (provisioning goes through the management API). This node is the one the
demo and the tests start, kept running: its name, ports and data live in one directory
(``.run/node`` by default), so ``stop`` then ``start`` resumes with the same queues and users.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from ..broker import localnode
from . import app
from ._common import fail

node_app = typer.Typer(
    help="A private RabbitMQ node with its dashboard, for trying the backbone on one machine.",
    no_args_is_help=True,
)
app.add_typer(node_app, name="node")

Directory = Annotated[Path, typer.Option("--dir", help="Where the node keeps its state and data.")]
DEFAULT = Path(".run/node")


@dataclass(frozen=True)
class _State:
    """What it takes to find the node again: its name, its ports, its process group."""

    name: str
    amqp_port: int
    mgmt_port: int
    prometheus_port: int
    dist_port: int
    pid: int

    def node(self, base: Path) -> localnode.LocalNode:
        return localnode.LocalNode(
            base=base.resolve(),
            name=self.name,
            amqp_port=self.amqp_port,
            mgmt_port=self.mgmt_port,
            prometheus_port=self.prometheus_port,
            dist_port=self.dist_port,
        )


def _state_file(base: Path) -> Path:
    return base / "node.json"


def _load(base: Path) -> _State | None:
    try:
        return _State(**json.loads(_state_file(base).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise fail(f"{_state_file(base)}: not a node's state ({exc}); remove {base}") from None


def _exports(node: localnode.LocalNode) -> str:
    return f"export BACKBONE_AMQP_URL={node.amqp_url} BACKBONE_MGMT_URL={node.mgmt_url}"


@node_app.command("start")
def start(directory: Directory = DEFAULT) -> None:
    """Start the node (or say it runs) and print the settings that point the backbone at it."""
    state = _load(directory)
    if state is not None and state.node(directory).running:
        node = state.node(directory)
        typer.echo(f"node {state.name} already runs")
    else:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            node = state.node(directory) if state else localnode.LocalNode(base=directory.resolve())
            node.start()
        except OSError as exc:
            raise fail(f"cannot use {directory}: {exc.strerror or exc}") from None
        except localnode.LocalNodeError as exc:
            last = str(exc).strip().splitlines()[-1:]
            raise fail(f"the node did not start: {last[0] if last else exc}") from None
        assert node.process is not None
        saved = _State(
            node.name,
            node.amqp_port,
            node.mgmt_port,
            node.prometheus_port,
            node.dist_port,
            node.process.pid,
        )
        _state_file(directory).write_text(json.dumps(asdict(saved)))
        typer.echo(f"node {node.name} started; its data is in {directory}/")
    typer.echo(
        f"AMQP 127.0.0.1:{node.amqp_port}; dashboard http://127.0.0.1:{node.mgmt_port}/ "
        "(user guest, from this machine only)"
    )
    typer.echo("point the backbone at it with:")
    typer.echo(f"  {_exports(node)}")
    typer.echo(f'  (or: eval "$(backbone node env{_dir_option(directory)})")')


def _dir_option(directory: Path) -> str:
    return "" if directory == DEFAULT else f" --dir {directory}"


@node_app.command("env")
def env(directory: Directory = DEFAULT) -> None:
    """Print the shell line that sets BACKBONE_AMQP_URL and BACKBONE_MGMT_URL to the node."""
    state = _load(directory)
    if state is None:
        raise fail(f"no node in {directory}: run `backbone node start` first")
    typer.echo(_exports(state.node(directory)))


@node_app.command("status")
def status(directory: Directory = DEFAULT) -> None:
    """Say whether the node runs (exit 0) or not (exit 1)."""
    state = _load(directory)
    if state is None:
        typer.echo(f"no node in {directory}")
        raise typer.Exit(1)
    if not state.node(directory).running:
        typer.echo(f"node {state.name} is stopped (its data is in {directory}/)")
        raise typer.Exit(1)
    typer.echo(
        f"node {state.name} runs: AMQP port {state.amqp_port}, dashboard port {state.mgmt_port}"
    )


@node_app.command("stop")
def stop(
    directory: Directory = DEFAULT,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also remove its data (queues, users, messages).")
    ] = False,
) -> None:
    """Stop the node cleanly; its data stays for the next start unless --purge."""
    state = _load(directory)
    if state is None:
        typer.echo(f"no node in {directory}: nothing to stop")
        return
    node = state.node(directory)
    if node.running:
        try:
            node.ctl("stop")
        except localnode.LocalNodeError as exc:
            typer.echo(f"warning: {exc}; killing the node instead", err=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(state.pid, signal.SIGKILL)  # what is left of it (the Erlang VM's helpers)
    if purge:
        node.stop()
        typer.echo(f"node {state.name} stopped; {directory}/ removed")
    else:
        typer.echo(f"node {state.name} stopped; its data stays in {directory}/")
