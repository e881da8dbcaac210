"""Drive ``tests/_magic_shell.py`` (a real InteractiveShell in its own process)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

SERVER = Path(__file__).resolve().parent / "_magic_shell.py"


class MagicShell:
    """One shell process; ``run(cell)`` returns what the shell reported for the cell."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(req)
        return self.receive(timeout, req)

    def send(self, req: dict[str, Any]) -> None:
        """Send a request without waiting for the reply (see ``receive``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, timeout: float, req: object = "the last request") -> dict[str, Any]:
        """The next reply."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the shell did not answer {req!r} within {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the shell exited ({self.proc.wait()}) during {req!r}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    def run(self, cell: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run a cell; the reply (see ``_magic_shell``)."""
        return self._request({"cell": cell}, timeout)

    def ok(self, cell: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run a cell that must succeed (a failure raises with what the shell showed)."""
        reply = self.run(cell, timeout)
        if not reply["ok"]:
            raise AssertionError(f"cell failed: {reply['error']}\n{reply['stdout']}")
        return reply

    def out(self, cell: str, timeout: float = 60.0) -> str:
        """Run a cell that must succeed; what it printed."""
        return str(self.ok(cell, timeout)["stdout"])

    def format(self, name: str) -> dict[str, Any]:
        """How the shell's display formatter renders ``name`` (mime -> text)."""
        return self._request({"format": name}, 30.0)

    def children(self) -> list[int]:
        return list(self._request({"children": True}, 30.0)["pids"])

    def threads(self) -> list[str]:
        return list(self._request({"children": True}, 30.0)["threads"])

    def interrupt(self) -> None:
        os.kill(self.proc.pid, signal.SIGINT)

    def close(self) -> list[int]:
        """End the shell (stdin EOF, as a terminal's Ctrl-D); pids of its descendants
        still alive 10 s later."""
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
        _, alive = psutil.wait_procs(descendants, timeout=10)
        return [p.pid for p in alive]


def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    """Wait until ``path`` exists (a handler's ``mark`` call is running)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still running (not zombies reaped by someone) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


UNHEX_HANDLER = '''"""Answers the bytes its input spells in hex (``ff00`` -> b"\\\\xff\\\\x00"), status STATUS."""

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result

STATUS = 200


def handle(data: bytes, ctx: Context) -> Result:
    return Result(STATUS, bytes.fromhex(data.decode()))


if __name__ == "__main__":
    serve(handle)
'''
"""A handler that returns binary data (source text; tests write it to a temporary file,
and edit ``STATUS = 200`` to see a handler edit take effect)."""
