"""A handler that breaks one rule of the protocol on purpose, for the conformance
checker's tests: ``bad_citizen.py FAULT``.  Each fault is a bug handler authors
really write; the check that catches it is named first.

- ``garbage_result`` (basic_call): answers every call with a frame that is not a
  Result message;
- ``exit_after_50`` (warm_reuse): exits after its 50th answer (as a handler that
  "recycles itself" would);
- ``empty_is_eof`` (empty_input): takes an Event frame of length 0 (an empty input)
  for the end of its input and exits;
- ``one_read`` (large_payload): reads each frame with a single ``read()``, so a frame
  larger than the pipe arrives cut short and the handler dies on it;
- ``stray_at_exit`` (stray_stdout): prints ``bye`` to stdout when its input ends
  (an atexit print), after its last Result;
- ``stray_after_result`` (stray_stdout): prints ``x`` to stdout after every Result;
- ``log_before_result`` (stray_stdout): from its second call on, prints
  ``handling`` to stdout before each Result (a debug print);
- ``ignore_eof`` (stdin_eof): a non-daemon thread keeps the process alive after
  stdin closes;
- ``ignore_sigterm`` (sigterm): ignores SIGTERM;
- ``leak`` (memory_growth): keeps 16 KiB per call;
- ``slow_start`` (cold_start): sleeps 2.5 s before serving;
- ``ascii_env`` (env_roundtrip): encodes every env value as ASCII, and dies on the
  first one that is not;
- ``grandchild`` / ``grandchild_setsid`` (leftover_processes): starts ``sleep 300``
  at start-up and leaves it running when it exits (in its process group, or in a
  process group and SID of its own, by setsid);
- ``crash_on_call``: reads each call, then exits 3 (``boom`` on stderr);
- ``raises``: an SDK handler whose function raises on every input (status 500).

Every other call is answered with its input (status 200).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from fnrun_nb.protocol import decode_context, decode_event, encode_result, read_frame

FAULT = sys.argv[1]
IN, OUT = 0, 1


def _read(n: int) -> bytes:
    return os.read(IN, n)


def _read_exactly(n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(IN, n - len(buf))
        if not chunk:
            return buf
        buf += chunk
    return buf


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(OUT, view) :]


def _one_read_frame() -> bytes | None:
    header = _read_exactly(4)
    if len(header) < 4:
        return None
    length = int.from_bytes(header, "big")
    payload = os.read(IN, length) if length else b""  # the bug: one read, not a loop
    if len(payload) < length:
        sys.stderr.write(f"short frame: {len(payload)} of {length} bytes\n")
        sys.exit(1)
    return payload


def raw_loop() -> int:
    """A hand-written handler loop (no SDK), with the fault's bug in it."""
    answered = 0
    while True:
        if FAULT == "one_read":
            event, context = _one_read_frame(), _one_read_frame()
        else:
            event = read_frame(_read_exactly)
            if FAULT == "empty_is_eof" and event == b"":
                return 0  # the bug: an empty frame is not the end of input
            context = read_frame(_read_exactly) if event is not None else None
        if event is None or context is None:
            if FAULT == "stray_at_exit":
                _write_all(b"bye\n")
            return 0
        data = decode_event(event)
        _, env = decode_context(context)
        if FAULT == "crash_on_call":
            sys.stderr.write("boom\n")
            return 3
        if FAULT == "ascii_env":
            env = {k: v.encode("ascii").decode() for k, v in env.items()}
        if FAULT == "log_before_result" and answered >= 1:
            _write_all(b"handling\n")
        if FAULT == "garbage_result":
            _write_all(b"\x00\x00\x00\x01\x0f")  # field 1 with wire type 7: not protobuf
        else:
            _write_all(encode_result(200, data, env))
        answered += 1
        if FAULT == "stray_after_result":
            _write_all(b"x")

        if FAULT == "exit_after_50" and answered == 50:
            return 0


def sdk_handler() -> None:
    from fnrun_nb.handler import serve

    kept: list[bytes] = []

    def handle(data: bytes, ctx: object) -> bytes:
        if FAULT == "leak":
            kept.append(b"\x01" * 16384)
        if FAULT == "raises":
            raise ValueError("cannot handle " + repr(data[:20]))
        return data

    serve(handle)


def main() -> int:
    if FAULT == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif FAULT == "ignore_eof":
        threading.Thread(target=lambda: time.sleep(3600), name="forgotten").start()
    elif FAULT == "slow_start":
        time.sleep(2.5)
    elif FAULT in ("grandchild", "grandchild_setsid"):
        subprocess.Popen(
            ["sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=FAULT == "grandchild_setsid",
        )
    if FAULT in ("ignore_sigterm", "ignore_eof", "slow_start", "grandchild",
                 "grandchild_setsid", "leak", "raises"):
        sdk_handler()
        return 0
    return raw_loop()


if __name__ == "__main__":
    sys.exit(main())
