"""README's command blocks, followed literally and in order, as a new user would.

Every ```sh block of README.md runs, one after the other, in one bash session (so exports
carry over), in a fresh copy of the repository whose `.venv` is this one. A block's first
failing command fails the test with the block's heading and what it printed. Only `make`
lines are left out: `make test` is this suite, and `make demo` and `make bench` have tests
of their own. The README starts its own private node (`backbone node start`) and stops it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backbone.broker import localnode

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(readme: str) -> list[tuple[str, str]]:
    """(the heading above it, the block) for every sh block, in order."""
    found = []
    for match in BLOCK.finditer(readme):
        headings = re.findall(r"^#+ (.+)$", readme[: match.start()], re.MULTILINE)
        found.append((headings[-1] if headings else "top", match.group(1)))
    return found


def script(readme: str) -> str:
    parts = ["set -euo pipefail"]
    for index, (heading, block) in enumerate(blocks(readme)):
        lines = [line for line in block.splitlines() if not line.lstrip().startswith("make ")]
        parts.append(f"echo '>>> block {index}: {heading}' >&2")
        parts.extend(lines)
    parts.append("echo '>>> done' >&2")
    return "\n".join(parts) + "\n"


def test_every_readme_block_has_commands() -> None:
    found = blocks((ROOT / "README.md").read_text())
    assert len(found) >= 5
    assert all(block.strip() for _, block in found)


@pytest.mark.skipif(not localnode.available(), reason="rabbitmq-server is not installed")
def test_readme_commands_work_in_order_from_a_fresh_copy(tmp_path: Path) -> None:
    clone = tmp_path / "backbone"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BACKBONE_") and key not in ("VIRTUAL_ENV",)
    }
    commands = script((ROOT / "README.md").read_text())
    # its own session: what the README starts in the background goes with it
    shell = subprocess.Popen(
        ["bash", "-c", commands],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = shell.communicate(timeout=420)
    finally:  # whatever happened, nothing the README started outlives the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        if (clone / ".run" / "node" / "node.json").exists():
            subprocess.run(
                [str(clone / ".venv/bin/backbone"), "node", "stop", "--purge"],
                cwd=clone,
                env=env,
                capture_output=True,
                timeout=120,
            )
    result = subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)
    markers = [line for line in result.stderr.splitlines() if line.startswith(">>> ")]
    assert result.returncode == 0 and markers[-1:] == [">>> done"], (
        f"README stopped in {markers[-1] if markers else 'the first block'} "
        f"(exit {result.returncode}):\n--- stdout\n{result.stdout[-4000:]}\n"
        f"--- stderr\n{result.stderr[-4000:]}"
    )
    assert "Traceback" not in result.stderr
    chatter = [line for line in result.stderr.splitlines() if " INFO " in line or "[info" in line]
    assert chatter == []  # library and log lines stay off a command's stderr
    top = {name.split("/")[0] for name in tracked if name} | {".venv"}  # .venv: this one
    made = {p.name + ("/" if p.is_dir() else "") for p in clone.iterdir() if p.name not in top}
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *sorted(made)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert made and sorted(made) == sorted(ignored)  # what README makes, .gitignore covers
