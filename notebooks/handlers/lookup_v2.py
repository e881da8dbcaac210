"""Version 2 of the enrichment handler: one batched backend request per call.

Same answers as version 1 (``lookup_v1.py``), one round trip instead of three.
"""

import json
import time

from fnrun_nb.handler import Context, serve

FIELDS = ("owner", "region", "tier")


def backend_get_many(key: str, fields: tuple[str, ...]) -> dict[str, str]:
    time.sleep(0.002)  # one round trip to the backend, whatever the number of fields
    return {field: f"{field}-of-{key}" for field in fields}


def handle(data: bytes, ctx: Context) -> str:
    return json.dumps(backend_get_many(data.decode(), FIELDS))


if __name__ == "__main__":
    serve(handle)
