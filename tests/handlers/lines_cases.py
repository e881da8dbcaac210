#!/usr/bin/env python3
"""A line handler (``Pool(protocol="lines")``): each input line gets one answer line,
the line itself, except these:

- ``hang``: never answers (sleeps);
- ``die``: writes ``dying`` to stderr and exits 3 without answering;
- ``two``: answers with two lines;
- ``pid``: answers with its pid;
- ``env:NAME``: answers with that variable of its environment (``-`` when unset).
"""

import os
import sys
import time


def main() -> None:
    out = sys.stdout
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        if line == "hang":
            time.sleep(300)
        elif line == "die":
            sys.stderr.write("dying\n")
            sys.stderr.flush()
            sys.exit(3)
        elif line == "two":
            out.write("one\ntwo\n")
        elif line == "pid":
            out.write(f"{os.getpid()}\n")
        elif line.startswith("env:"):
            out.write(os.environ.get(line[4:], "-") + "\n")
        else:
            out.write(line + "\n")
        out.flush()


if __name__ == "__main__":
    main()
