#!/usr/bin/env python3
"""Echo handler: answers with the input bytes, and the per-call env as result env."""

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def handle(data: bytes, ctx: Context) -> Result:
    return Result(200, data, ctx.env)


if __name__ == "__main__":
    serve(handle)
