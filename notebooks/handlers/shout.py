#!/usr/bin/env python3
"""One small Python handler in the three kinds ``Pool(protocol=...)`` drives: it answers
with its input upper-cased.  ``argv[1]`` says how it is run:

- ``fnrun`` (the default): a warm process serving framed calls (the handler SDK);
- ``lines``: a warm process answering each input line with one line;
- ``script``: one call per process, the input on stdin, the answer on stdout.
"""

import sys


def shout(data: bytes) -> bytes:
    return data.upper()


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "fnrun"
    if kind == "script":
        sys.stdout.buffer.write(shout(sys.stdin.buffer.read()))
    elif kind == "lines":
        out = sys.stdout.buffer
        for line in sys.stdin.buffer:
            out.write(shout(line.rstrip(b"\n")) + b"\n")
            out.flush()
    else:
        from fnrun_nb.handler import Context, serve
        from fnrun_nb.values import Result

        def handle(data: bytes, ctx: Context) -> Result:
            return Result(200, shout(data))

        serve(handle)


if __name__ == "__main__":
    main()
