#!/usr/bin/env python3
"""A script (``Pool(protocol="script")``) whose input says what it does, one process
per call:

- ``ok:TEXT``: writes TEXT to stdout, exits 0;
- ``exit:N``: writes ``bye`` to stdout and ``failing N`` to stderr, exits N;
- ``signal:NAME``: kills itself with that signal (``SEGV``, ``TERM``...);
- ``hang``: starts a grandchild ``sleep``, then sleeps, for ever as far as a call goes;
- ``stderr:TEXT``: writes TEXT to stderr and ``ok`` to stdout;
- ``env:A,B``: writes ``A=<value>;B=<value>`` of its environment (``-`` when unset);
- ``pid``: writes its pid;
- ``count:DIR``: enters DIR for 0.3 s (a file named by its pid) and writes how many
  scripts were in DIR at once at most, as it saw it.
"""

import os
import signal
import subprocess
import sys
import time


def main() -> None:
    cmd = sys.stdin.buffer.read().decode()
    verb, _, arg = cmd.partition(":")
    out = sys.stdout
    if verb == "ok":
        out.write(arg)
    elif verb == "exit":
        out.write("bye")
        out.flush()
        sys.stderr.write(f"failing {arg}\n")
        sys.exit(int(arg))
    elif verb == "signal":
        os.kill(os.getpid(), getattr(signal, "SIG" + arg))
        time.sleep(10)
    elif verb == "hang":
        subprocess.Popen(["sleep", "300"])
        time.sleep(300)
    elif verb == "stderr":
        sys.stderr.write(arg)
        out.write("ok")
    elif verb == "env":
        out.write(";".join(f"{k}={os.environ.get(k, '-')}" for k in arg.split(",")))
    elif verb == "pid":
        out.write(str(os.getpid()))
    elif verb == "count":
        mine = os.path.join(arg, str(os.getpid()))
        open(mine, "w").close()
        most = 0
        for _ in range(30):
            most = max(most, len(os.listdir(arg)))
            time.sleep(0.01)
        os.unlink(mine)
        out.write(str(most))
    else:
        sys.stderr.write(f"unknown command {cmd!r}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
