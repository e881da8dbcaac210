"""An SDK handler whose input picks what it does, for the SDK tests.

- ``print``: print() and a C-level write to fd 1, then answer ``printed``;
- ``raise``: raise ``ValueError("boom")`` (the SDK answers 500);
- ``bad``: return an int (not a valid answer: the SDK answers 500 TypeError);
- ``none``: return None; ``bytearray``: return a bytearray;
- ``hello``: the Result of the golden frame ``result_hello``;
- ``ctx``: answer JSON of the context (env, deadline ISO string, remaining, tz);
- ``modules``: answer the names of heavy modules that are imported;
- anything else is echoed back as ``str``.
"""

from __future__ import annotations

import json
import os
import sys

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def handle(data: bytes, ctx: Context) -> object:
    if data == b"print":
        print("a stray print from the handler")
        os.write(1, b"a C-level write to fd 1\n")
        return "printed"
    if data == b"raise":
        raise ValueError("boom")
    if data == b"bad":
        return 42
    if data == b"none":
        return None
    if data == b"bytearray":
        return bytearray(b"from a bytearray")
    if data == b"hello":
        return Result(200, b"Hello, world!", {"Content-Type": "text/plain"})
    if data == b"ctx":
        deadline = ctx.deadline
        return json.dumps({
            "env": ctx.env,
            "deadline": None if deadline is None else deadline.isoformat(),
            "utc": None if deadline is None else deadline.utcoffset().total_seconds(),
            "remaining": ctx.remaining() if deadline is not None else "inf",
            "infinite": ctx.remaining() == float("inf"),
        })
    if data == b"modules":
        heavy = ("pandas", "IPython", "ipywidgets", "numpy")
        return json.dumps(sorted(m for m in heavy if m in sys.modules))
    return data.decode()


if __name__ == "__main__":
    serve(handle)
