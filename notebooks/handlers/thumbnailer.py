#!/usr/bin/env python3
"""A thumbnail service with a memory leak, for the profiling notebook.

Each call "renders" a 256 KiB thumbnail of its input (under a millisecond of CPU) and
keeps it in a cache keyed by the input, so that the same input is served from memory
next time.  The cache has no bound: every new input keeps another 256 KiB for the
life of the process, which is how most leaks in services look (a memo table, a
registry, a list of listeners that only grows).  The per-call env ``CACHE=off``
skips the cache (the fix).

It answers with the thumbnail's first 16 bytes in hex, and ``cached: yes|no``.
"""

from __future__ import annotations

import hashlib

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result

THUMBNAIL_BYTES = 256 * 1024
_cache: dict[bytes, bytes] = {}


def render(data: bytes) -> bytes:
    """256 KiB derived from ``data`` (a SHAKE-256 stream: every page written)."""
    return hashlib.shake_256(data).digest(THUMBNAIL_BYTES)


def handle(data: bytes, ctx: Context) -> Result:
    if ctx.env.get("CACHE") == "off":
        return Result(200, render(data)[:16].hex().encode(), {"cached": "no"})
    thumb = _cache.get(data)
    hit = thumb is not None
    if thumb is None:
        thumb = _cache[data] = render(data)
    return Result(200, thumb[:16].hex().encode(), {"cached": "yes" if hit else "no"})


if __name__ == "__main__":
    serve(handle)
