"""py-spy attached by pid to a pool's worker processes, while chosen calls run.

::

    attach(pids)  ── py-spy record --pid P --format raw --function -o FILE  (one per pid)
                     wait for its "Sampling process" line: it is reading the process
    ... the chosen calls run ...
    stop()        ── SIGINT each py-spy, wait, read FILE ──▶ Profile (collapsed stacks)

py-spy is attached by pid rather than made the handler's parent, because a py-spy
that launches a command writes to that command's stdout, which is the protocol
channel.  Its output has no timestamps, so it samples only while the chosen calls
run: it attaches before the first and stops after the last; between calls a worker
waits in ``read`` (idle), and py-spy leaves idle samples out.  ``--function`` gives
each frame the line its function is defined on, as the SDK's profiles do.

Attaching to a sibling process needs ``CAP_SYS_PTRACE`` or
``kernel.yama.ptrace_scope`` 0; :func:`check_ptrace` reads both first.  The paths it
reads are module attributes (:data:`PROC_STATUS`, :data:`YAMA_SCOPE`) so that a test
can show it a process without the capability and a stricter scope.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

from .profile import Profile, ProfilerUnavailable

__all__ = ["PROC_STATUS", "YAMA_SCOPE", "PySpy", "check_ptrace"]

PROC_STATUS = "/proc/self/status"
"""Where this process's capabilities are read (``CapEff``)."""
YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
"""Where the Yama ptrace scope is read (absent: no Yama, attaching is allowed)."""
DEFAULT_RATE = 1000
"""Samples per second py-spy takes unless the profiler setting gives ``--rate``."""
_CAP_SYS_PTRACE = 19
_ATTACH_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def check_ptrace() -> None:
    """Raise :class:`ProfilerUnavailable` unless this process may attach to its own
    child processes' siblings with ptrace (``CAP_SYS_PTRACE``, or Yama scope 0)."""
    status = _read(PROC_STATUS) or ""
    cap = 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            cap = int(line.split()[1], 16)
    if cap & (1 << _CAP_SYS_PTRACE):
        return
    scope_text = _read(YAMA_SCOPE)
    if scope_text is None:
        return
    scope = scope_text.strip()
    if scope == "0":
        return
    raise ProfilerUnavailable(
        "py-spy cannot attach to the handler processes: attaching to another process "
        "needs CAP_SYS_PTRACE, which this process has not got, or "
        f"kernel.yama.ptrace_scope 0, which is {scope}.  Run with the capability (as "
        "root, or docker run --cap-add SYS_PTRACE), or set it with "
        "`sysctl kernel.yama.ptrace_scope=0`; handlers written with fnrun_nb.handler "
        "are profiled without it (profiler='auto')."
    )


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which(
        "py-spy", path=os.path.dirname(sys.executable)
    )
    if found is None:
        raise ProfilerUnavailable(
            "py-spy is not installed: pip install 'fnrun-nb[profile]' (or pip install "
            "py-spy); handlers written with fnrun_nb.handler are profiled without it "
            "(profiler='auto')"
        )
    return found


class PySpy:
    """py-spy recording each of ``pids`` until :meth:`stop`; see the module doc.

    Construction attaches to every process and returns once each py-spy says it is
    sampling; it raises :class:`ProfilerUnavailable` (and leaves nothing running)
    when py-spy is missing, ptrace is not permitted, or py-spy cannot read a process
    (not a Python process: py-spy reads CPython only).
    """

    def __init__(self, pids: Sequence[int], options: Sequence[str] = (), command: str = "") -> None:
        check_ptrace()
        exe = _py_spy()
        self._dir = tempfile.TemporaryDirectory(prefix="fnrun-pyspy-")
        self._procs: list[tuple[int, subprocess.Popen[bytes], str]] = []
        options = list(options)
        if "--rate" not in options and "-r" not in options:
            options += ["--rate", str(DEFAULT_RATE)]  # as often as the SDK's sampler
        self.rate = float(options[options.index("--rate" if "--rate" in options else "-r") + 1])
        try:
            for pid in pids:
                out = os.path.join(self._dir.name, f"{pid}.txt")
                proc = subprocess.Popen(
                    [exe, "record", "--pid", str(pid), "--format", "raw", "--function",
                     "--output", out, *options],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )
                self._procs.append((pid, proc, out))
            for pid, proc, _ in self._procs:
                self._wait_sampling(pid, proc, command)
        except BaseException:
            self._kill_all()
            raise

    @staticmethod
    def _wait_sampling(pid: int, proc: subprocess.Popen[bytes], command: str) -> None:
        """Return once py-spy prints that it samples ``pid``; raise if it exits first."""
        stdout = proc.stdout
        assert stdout is not None
        line: list[bytes] = []
        # A thread, so that a py-spy that neither prints nor exits cannot hang us.
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(_ATTACH_TIMEOUT_S)
        if line and b"Sampling process" in line[0]:
            return
        try:
            _, err = proc.communicate(timeout=1.0) if not reader.is_alive() else (b"", b"")
        except subprocess.TimeoutExpired:
            err = b""
        text = err.decode("utf-8", "replace").strip()
        lower = text.lower()
        if "python" in lower and ("version" in lower or "interpreter" in lower):
            raise ProfilerUnavailable(
                f"py-spy cannot read process {pid} ({command or 'the handler'}): it is not a "
                "Python process, and py-spy reads CPython only.  For a handler in C, Go or "
                f"Rust use a native profiler such as perf.  py-spy said: {text}"
            )
        raise ProfilerUnavailable(
            f"py-spy could not attach to process {pid} ({command or 'the handler'}): "
            f"{text or 'it did not start sampling within ' + str(_ATTACH_TIMEOUT_S) + ' s'}"
        )

    def stop(self, calls: int) -> Profile:
        """Stop every py-spy and return the stacks they saw as one Profile of ``calls``
        calls.  Raises :class:`ProfilerUnavailable` if a py-spy failed to write them."""
        try:
            for _, proc, _ in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            texts = []
            problems = []
            for pid, proc, out in self._procs:
                try:
                    _, err = proc.communicate(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
                text = _read(out)
                if text is None:
                    # A process that exited while sampled (a crashed call) leaves
                    # py-spy with nothing to write: its samples are lost with it.
                    if os.path.exists(f"/proc/{pid}"):
                        problems.append(f"{pid}: {err.decode('utf-8', 'replace').strip()}")
                    continue
                texts.append(text)
            if problems and not texts:
                raise ProfilerUnavailable("py-spy wrote no profile: " + "; ".join(problems))
            return Profile.from_collapsed(
                "\n".join(texts), calls=calls, profiler="py-spy", interval_s=1 / self.rate
            )
        finally:
            self._kill_all()

    def _kill_all(self) -> None:
        for _, proc, _ in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._dir.cleanup()
