"""A handler with a cold start: it loads its "model" on the first call.

The first call on each process pays ~150 ms of loading; later calls take ~2 ms.
This is the shape warm-up analysis looks for (``batch.warmup()``).
"""

import time

from fnrun_nb.handler import Context, serve

_model: dict[str, float] | None = None


def load_model() -> dict[str, float]:
    time.sleep(0.15)  # reading weights, JIT-compiling, filling caches...
    return {"bias": 0.5}


def handle(data: bytes, ctx: Context) -> str:
    global _model
    if _model is None:
        _model = load_model()
    time.sleep(0.002)
    return f"score {len(data) * _model['bias']:.1f}"


if __name__ == "__main__":
    serve(handle)
