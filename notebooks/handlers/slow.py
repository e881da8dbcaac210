"""A handler with variable latency, for latency exploration.

How long a call sleeps, in this order:

- the per-call env ``sleep_ms`` (e.g. ``{"sleep_ms": "25"}``);
- an input that is a number: that many milliseconds (``b"12.5"``);
- otherwise a latency derived from the input bytes, 1 to 20 ms, with one input in
  ten taking 50 ms: a long tail, the same for the same input.

It answers with the input and the env ``slept_ms`` saying how long it slept.
"""

from __future__ import annotations

import time
import zlib

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def latency_ms(data: bytes, env: dict[str, str]) -> float:
    if "sleep_ms" in env:
        return float(env["sleep_ms"])
    try:
        return float(data)
    except ValueError:
        pass
    h = zlib.crc32(data)
    return 50.0 if h % 10 == 0 else 1.0 + (h >> 8) % 20


def handle(data: bytes, ctx: Context) -> Result:
    ms = latency_ms(data, ctx.env)
    time.sleep(ms / 1000)
    return Result(200, data, {"slept_ms": f"{ms:g}"})


if __name__ == "__main__":
    serve(handle)
