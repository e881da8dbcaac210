"""Run a command beside CPU-bound load, the way a busy machine runs it: `make test-stress`.

    python tests/stress_load.py [--hogs N] -- COMMAND [ARG ...]

Starts N processes that each keep one CPU busy, runs COMMAND, and stops every one of
them however COMMAND ends (success, failure, Ctrl-C, SIGTERM); the exit status is
COMMAND's (128 + the signal number when a signal ended it).  A hog also ends by itself
when this script's process goes away without cleaning up (SIGKILL), so none outlives
the run.

The hogs are siblings of COMMAND, not its children, so the suite's leak check (which
looks at the test process's own descendants) does not see them.  They run in their
own session, so a Ctrl-C at the terminal reaches the suite, not them.

    stress_load.py ──┬── hog 1 (spins; exits when its parent changes)
                     ├── hog N
                     └── COMMAND (pytest); its status is this script's status
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

# A hog spins in short rounds and checks between them that its parent is still the
# process that started it; a re-parented hog (its starter died by SIGKILL) exits.
_HOG = """\
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


def _start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", _HOG],
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


def _run(command: list[str]) -> int:
    """Run ``command`` to its end; a SIGINT or SIGTERM sent to this script is passed
    on to it (a terminal's Ctrl-C already reaches it directly), and this script keeps
    waiting so the suite can report and clean up before the hogs are stopped."""
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None and signum == signal.SIGTERM:
            child.send_signal(signum)

    # A handler (never SIG_IGN, which the child would inherit) so this script
    # outlives the Ctrl-C its process group receives and waits for the suite's status.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
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
    hogs = _start_hogs(args.hogs)
    try:
        pids = ", ".join(str(h.pid) for h in hogs) or "none"
        print(
            f"*** UNDER LOAD: {args.hogs} CPU-bound processes (pids {pids}) run beside: "
            + " ".join(command),
            flush=True,
        )
        status = _run(command)
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
