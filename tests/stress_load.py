"""Run a command beside CPU-bound load, the way a busy machine runs it: `make test-stress`.

    python tests/stress_load.py [--hogs N] -- COMMAND [ARG ...]

Starts N processes that each keep one CPU busy, runs COMMAND, and stops every one of
them however COMMAND ends (success, failure, Ctrl-C, SIGTERM); the exit status is
COMMAND's (128 + the signal number when a signal ended it).  A SIGTERM sent to this
script goes on to COMMAND.  A hog also ends by itself when this script's process goes
away without cleaning up (SIGKILL), so none outlives the run.

The hogs are siblings of COMMAND, not its children, so the suite's leak check (which
looks at the test process's own descendants) does not see them.  They run in their
own session, so a Ctrl-C at the terminal reaches the suite, not them.

    stress_load.py ──┬── hog 1 (spins; exits when its parent changes)
                     ├── hog N
                     └── COMMAND (pytest); its status is this script's status
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

# A hog spins in short rounds and checks between them that its parent is still the
# process that started it (named in argv: a hog cannot ask getppid() at its start,
# which may come after its starter died); a re-parented hog exits.
_HOG = """\
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


def _start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", _HOG, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]


def _stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        if hog.poll() is None:
            hog.kill()
    for hog in hogs:
        hog.wait()


class _Command:
    """The command's process, and what to do with a signal sent to this script.

    SIGTERM is passed on to the command; this script then waits for the command's
    status as usual.  SIGINT is not passed on: a terminal's Ctrl-C reaches the command
    directly (its process group), and a second one would cut short the suite's own
    cleanup.  Either signal arriving before the command started is passed on as soon as
    it has (or, before it is started, keeps it from starting).  Both have a handler,
    never SIG_IGN (which the command would inherit), so this script outlives them and
    stops the hogs after the command has ended.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.early: int | None = None  # a signal that came before the command started
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Runs in the main thread between two bytecodes: ``proc`` is either unset
        # (then ``run`` sees ``early``) or set (then the signal goes on now).
        if self.proc is None:
            self.early = signum
        elif signum == signal.SIGTERM and self.proc.poll() is None:
            self.proc.terminate()

    def run(self, command: list[str]) -> int:
        """Run ``command`` to its end; its exit status (128 + N for signal N)."""
        if self.early is not None:
            return 128 + self.early
        proc = subprocess.Popen(command)
        self.proc = proc
        if self.early is not None:  # came while the command was being started
            proc.send_signal(self.early)
        status = proc.wait()
        return 128 - status if status < 0 else status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes (default 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    if args.hogs < 0:
        parser.error("--hogs must be 0 or more")

    started = time.monotonic()
    runner = _Command()
    hogs = _start_hogs(args.hogs)
    try:
        pids = ", ".join(str(h.pid) for h in hogs) or "none"
        print(
            f"*** UNDER LOAD: {args.hogs} CPU-bound processes (pids {pids}) run beside: "
            + " ".join(command),
            flush=True,
        )
        status = runner.run(command)
    finally:
        _stop_hogs(hogs)
    print(
        f"*** UNDER LOAD: done in {time.monotonic() - started:.0f} s, exit status {status}; "
        f"{args.hogs} CPU-bound processes stopped",
        flush=True,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
