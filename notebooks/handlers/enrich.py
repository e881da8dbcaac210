"""A handler that enriches a record from a slow backend: two versions, one setting.

- The version is the first argument.  ``enrich.py v1`` asks the backend once per field
  (one ~2 ms round trip each); ``enrich.py v2`` asks for every field in one round
  trip, then spends ~0.5 ms per field decoding the bigger answer.
- The per-call env ``FIELDS`` says how many fields the caller wants (default 3).

(The backend is simulated with sleeps, so the costs are the same on every machine.)
"""

import json
import sys
import time

from fnrun_nb.handler import Context, serve

VERSION = sys.argv[1] if len(sys.argv) > 1 else "v1"
ROUND_TRIP_S = 0.002
DECODE_S_PER_FIELD = 0.0005


def fetch_v1(key: str, fields: list[str]) -> dict[str, str]:
    answer = {}
    for field in fields:
        time.sleep(ROUND_TRIP_S)  # one round trip per field
        answer[field] = f"{field}-of-{key}"
    return answer


def fetch_v2(key: str, fields: list[str]) -> dict[str, str]:
    time.sleep(ROUND_TRIP_S + DECODE_S_PER_FIELD * len(fields))  # one trip, then decode
    return {field: f"{field}-of-{key}" for field in fields}


FETCH = {"v1": fetch_v1, "v2": fetch_v2}[VERSION]


def handle(data: bytes, ctx: Context) -> str:
    fields = [f"field{i}" for i in range(int(ctx.env.get("FIELDS", "3")))]
    return json.dumps(FETCH(data.decode(), fields))


if __name__ == "__main__":
    serve(handle)
