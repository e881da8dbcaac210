#!/usr/bin/env python3
"""One handler in the three kinds (``Pool(protocol=...)``): it answers with its input
upper-cased and reversed.  ``argv[1]`` is the kind: ``fnrun`` (the SDK's framed
protocol, the default), ``lines`` (one line in, one line out) or ``script`` (one
input on stdin, the answer on stdout, then exit)."""

import sys


def answer(data: bytes) -> bytes:
    return data.upper()[::-1]


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "fnrun"
    if kind == "script":
        sys.stdout.buffer.write(answer(sys.stdin.buffer.read()))
    elif kind == "lines":
        out = sys.stdout.buffer
        for line in sys.stdin.buffer:
            out.write(answer(line.rstrip(b"\n")) + b"\n")
            out.flush()
    else:
        from fnrun_nb.handler import Context, serve
        from fnrun_nb.values import Result

        def handle(data: bytes, ctx: Context) -> Result:
            return Result(200, answer(data))

        serve(handle)


if __name__ == "__main__":
    main()
