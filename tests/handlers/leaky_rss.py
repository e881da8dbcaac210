"""A handler that leaks a known amount of memory per call (argv[1], KiB; 256 by
default): each call keeps a new buffer of that size, every page written, in a global
list, so the process's resident memory grows by that much per call."""

from __future__ import annotations

import sys

from fnrun_nb.handler import Context, serve

KIB = int(sys.argv[1]) if len(sys.argv) > 1 else 256
_kept: list[bytes] = []


def handle(data: bytes, ctx: Context) -> bytes:
    _kept.append(b"\x01" * (KIB * 1024))
    return data


if __name__ == "__main__":
    serve(handle)
