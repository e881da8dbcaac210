"""Run JupyterLab and Debian's Chromium for a browser test, and clean both up.

Facts this relies on (verified with JupyterLab 4.6, ipywidgets 8.1, ipykernel 7.4 and
Debian Chromium 156 driven by the ``playwright`` package):

- Chromium comes from the distribution (``apt-get install chromium``), never from
  ``playwright install``; it is launched by path with the flags in
  :data:`CHROMIUM_ARGS` (without the background-networking ones it keeps trying to
  reach the network).
- JupyterLab gets fresh settings, workspace, runtime and config directories per run
  (or an old session is reused), a free port with ``port_retries=0``, a token, and no
  news or update checks.  The news toast still appears unless the notification
  settings say ``fetchNews: "false"``.
- The server is ready when ``/api/status`` answers.  It is stopped with SIGTERM (it
  shuts its kernels down); the PIDs of its descendants are recorded first and any
  survivor is killed by PID.
- In the page: *Run All* clicked before the kernel is connected is lost, so wait for
  the status bar to say ``Idle``; a notebook needs a ``kernelspec`` in its metadata or
  a kernel dialog blocks.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> str:
    """The Chromium path; skips the test without it, except in CI (``CI`` set), where a
    missing browser fails the test: a skipped browser test proves nothing there."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{message}; the browser test must run in CI", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notebook(cells: list[str]) -> dict[str, Any]:
    """An nbformat 4 notebook of code cells, with the kernelspec Lab needs."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell-{i}",
                "metadata": {},
                "source": source,
                "outputs": [],
                "execution_count": None,
            }
            for i, source in enumerate(cells)
        ],
    }


class JupyterLab:
    """A JupyterLab server in ``tmp`` for one test; a context manager.

    ``url(path)`` is a page of it with the token; notebooks go in ``root``.
    """

    def __init__(self, tmp: Path, *, start_timeout: float = 60.0) -> None:
        self.tmp = tmp
        self.root = tmp / "nb"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.start_timeout = start_timeout
        self.log_path = tmp / "jupyterlab.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def write_notebook(self, name: str, cells: list[str]) -> str:
        (self.root / name).write_text(json.dumps(notebook(cells)))
        return name

    def __enter__(self) -> JupyterLab:
        settings = self.tmp / "settings"
        for d in (self.root, settings, self.tmp / "workspaces", self.tmp / "runtime",
                  self.tmp / "config"):
            d.mkdir(parents=True, exist_ok=True)
        notify = settings / "@jupyterlab" / "apputils-extension"
        notify.mkdir(parents=True)
        (notify / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        env = dict(os.environ)
        env.update(
            JUPYTER_RUNTIME_DIR=str(self.tmp / "runtime"),
            JUPYTER_CONFIG_DIR=str(self.tmp / "config"),
            PYTHONUNBUFFERED="1",
        )
        argv = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.root,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        end = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"JupyterLab did not answer in {self.start_timeout:g} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the server (it shuts its kernels down), then kill survivors by PID."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def keep_output(src: Path, dest_dir: Path) -> Path:
    """Copy a test artefact (screenshot, log) to ``dest_dir``; returns the copy's path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copyfile(src, dest)
    return dest
