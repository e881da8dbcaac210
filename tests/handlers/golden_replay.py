"""A handler written with the standard library only, for the host-side golden tests.

It records every frame the host writes (hex, one per line) to the file named by its
first argument, and answers each call with the golden Result frame whose name is the
call's data (``result_hello``...), or with ``result_hello`` for any other data.  It
knows nothing of fnrun_nb, so it checks the host's bytes, not the library against
itself.

Usage: ``python golden_replay.py RECORD_FILE GOLDEN_JSON``
"""

from __future__ import annotations

import json
import sys


def read_frame() -> bytes | None:
    head = sys.stdin.buffer.read(4)
    if len(head) < 4:
        return None
    payload = sys.stdin.buffer.read(int.from_bytes(head, "big"))
    return head + payload


def main() -> None:
    record, golden = sys.argv[1], sys.argv[2]
    results = {
        f["name"]: bytes.fromhex(f["frame_hex"])
        for f in json.load(open(golden))
        if f["message"] == "fnrun.protobuf.Result"
    }
    with open(record, "a") as log:
        while True:
            event = read_frame()
            if event is None:
                return
            context = read_frame()
            assert context is not None
            log.write(event.hex() + " " + context.hex() + "\n")
            log.flush()
            # The Event payload is field 1 (data): tag 0x0a, a one-byte length here.
            data = event[6:] if len(event) > 4 else b""
            sys.stdout.buffer.write(results.get(data.decode("latin-1"), results["result_hello"]))
            sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
