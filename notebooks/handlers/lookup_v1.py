"""Version 1 of a handler that enriches a record from a slow backend.

It asks the backend once per field: three round trips of ~2 ms each.  (The backend
is simulated with a sleep, so the cost is the same on every machine.)
"""

import json
import time

from fnrun_nb.handler import Context, serve

FIELDS = ("owner", "region", "tier")


def backend_get(key: str, field: str) -> str:
    time.sleep(0.002)  # one round trip to the backend
    return f"{field}-of-{key}"


def handle(data: bytes, ctx: Context) -> str:
    key = data.decode()
    return json.dumps({field: backend_get(key, field) for field in FIELDS})


if __name__ == "__main__":
    serve(handle)
