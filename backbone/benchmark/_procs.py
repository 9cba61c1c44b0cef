"""The worker processes under test, started as operators start them, and what they cost.

Each validator and the tracker is its own ``backbone run ...`` process, so its CPU time and
peak memory are its own. Both are read from ``/proc`` (Linux): ``VmHWM`` is the kernel's
peak resident set, which sampling would miss.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _all_cpu(matches: Callable[[str, list[str]], bool]) -> float:
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:  # gone meanwhile
            continue
        fields = tail.split()
        if matches(head.split("(", 1)[1], fields):
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of every live process in a process group (the broker: its Erlang VM and
    helpers)."""
    return _all_cpu(lambda _, fields: int(fields[2]) == pgid)  # pgrp


def named_cpu_seconds(name: str) -> float:
    """CPU seconds of every live process of this name (``postgres``: the server's processes,
    those serving the workers among them)."""
    return _all_cpu(lambda command, _: command == name)


def peak_mib(pid: int) -> float:
    """Peak resident memory of a live process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the BACKBONE_* variables a worker process reads."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            env.pop(f"BACKBONE_{name.upper()}", None)
            continue
        text = json.dumps(value) if isinstance(value, list) else str(value)
        env[f"BACKBONE_{name.upper()}"] = text
    env["BACKBONE_LOG_FORMAT"] = "json"
    return env


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    cpu_at_mark: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def mark(self) -> None:
        self.cpu_at_mark = cpu_seconds(self.pid)

    def cpu_since_mark(self) -> float:
        return cpu_seconds(self.pid) - self.cpu_at_mark


@dataclass
class Workers:
    """``processes`` validators and one tracker, logging (JSON, INFO) into ``logs``."""

    settings: Settings
    processes: int
    prefetch: int
    logs: Path
    running: list[Worker] = field(default_factory=list)

    def start(self, validators: bool = True) -> None:
        """The tracker, and (unless told not to) the validators."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):  # a run before this one's
            old.unlink()
        self._start([("tracker", ["run", "tracker"])])
        if validators:
            self.start_validators()

    def start_validators(self) -> None:
        self._start(
            [
                (f"validator-{n}", ["run", "validator", "--prefetch", str(self.prefetch)])
                for n in range(1, self.processes + 1)
            ]
        )

    def stop_validators(self) -> None:
        """Stop the validators as an operator does (SIGTERM), so that a backlog builds."""
        validators = [w for w in self.running if w.name.startswith("validator")]
        self._stop(validators)
        self.running = [w for w in self.running if w not in validators]

    def _start(self, commands: list[tuple[str, list[str]]]) -> None:
        env = environment(self.settings)
        for name, arguments in commands:
            with (self.logs / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "backbone", *arguments],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.running.append(Worker(name, process))

    def check_alive(self) -> None:
        for worker in self.running:
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"the {worker.name} process exited ({worker.process.returncode}); "
                    f"see {self.logs / (worker.name + '.log')}"
                )

    def mark(self) -> None:
        for worker in self.running:
            worker.mark()

    def complaints(self, most: int = 5) -> str:
        """The last warnings and errors each worker logged, one line each, for a report of
        why a run is stuck."""
        lines = []
        for worker in self.running:
            log = self.logs / f"{worker.name}.log"
            said = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if any(mark in line for mark in ('"warning"', '"error"', " WARNING ", " ERROR "))
            ]
            lines += [f"\n  {worker.name}: {line[:300]}" for line in said[-most:]]
        return "".join(lines)

    def peaks(self) -> dict[str, float]:
        return {worker.name: peak_mib(worker.pid) for worker in self.running}

    def cpu_since_mark(self) -> dict[str, float]:
        return {worker.name: worker.cpu_since_mark() for worker in self.running}

    def stop(self) -> None:
        self._stop(self.running)
        self.running.clear()

    @staticmethod
    def _stop(workers: list[Worker]) -> None:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
