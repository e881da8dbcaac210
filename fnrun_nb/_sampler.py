"""The handler SDK's call profiler: a sampling thread, and the profile's wire encoding.

::

    serve thread:  sampler.begin() ── fn(data, ctx) ── sampler.end() -> payload
    sampler thread (started on the first profiled call, daemon, parked otherwise):
        while a call is marked: every ``interval`` take sys._current_frames()[serve
        thread], walk it up to the handler's own frame, count the stack

Only calls the host marks are sampled (``FNRUN_NB_PROFILE=1``); between them the
thread waits on an Event and costs nothing.  Stacks are counted as tuples of code
objects (no strings built while sampling) and turned into text once, at the call's
end.  The frames of ``serve`` and below it (the SDK's loop, decoding, encoding) are
left out: a stack is the handler function and what it calls.

The sampler sleeps half the interval, then waits for the GIL; during a profiled call
the interpreter's switch interval is lowered to half the interval too, so that the
wait is short even while the handler runs pure Python (at the default 5 ms a
CPU-bound call would be sampled at 200 Hz whatever was asked); it is restored when
the call ends.  So a sample is taken about once per interval (2 ms by default, less
often on a loaded machine).  Measured (``python -m benchmarks --only profiling``):
profiling adds about 10% (9% and 13% in two runs) to a CPU-bound call, and about
0.2 ms to a call of any size (waking the sampler, the payload).

The payload (``FNRUN_NB_PROFILE_DATA``, see ``proto/fnrun.proto``): base64 of the
zlib-compressed text ``"fnrun-profile 1 <samples> <interval_us>\\n"`` and Brendan
Gregg's collapsed stacks, ``frame;frame;leaf count`` per line, root first, each frame
``function (file:first_line)``.  At most :data:`MAX_PAYLOAD` characters: the rarest
stacks are merged into one ``[other stacks]`` frame until it fits, so a profile's
sample count is always whole.

Standard library only: this runs inside handler processes.
"""

from __future__ import annotations

import base64
import re
import shlex
import sys
import threading
import time
import zlib
from types import CodeType, FrameType

__all__ = [
    "DEFAULT_INTERVAL",
    "MAX_PAYLOAD",
    "MAX_TEXT",
    "OTHER_FRAME",
    "CallSampler",
    "decode_payload",
    "encode_payload",
    "parse_frame",
    "parse_profiler",
]

DEFAULT_INTERVAL = 0.002
"""Seconds between two samples of a profiled call (500 Hz): a sample costs the
handler a GIL hand-over, and at 1 ms the overhead on a CPU-bound call was 35%
(pinned, loaded machine) against about 10-18% at 2 ms."""
MAX_PAYLOAD = 65536
"""Characters of base64 a call's profile may take in the Result env, at most."""
MAX_TEXT = 16 * 1024 * 1024
"""Bytes a payload may inflate to on the host (more is not a call profile)."""
OTHER_FRAME = "[other stacks] (:0)"
"""The frame the rarest stacks are merged into when a profile exceeds the cap."""
_HEADER = "fnrun-profile 1"
_FRAME = re.compile(r"(.*) \((.*):(\d+)\)")
_PY_SPY_OPTIONS = {"--native", "--nonblocking", "--rate", "-r", "--gil", "-g"}


def parse_frame(frame: str) -> tuple[str, str, int]:
    """``"function (file:line)"`` as ``(function, file, line)``; a frame without the
    parenthesised location is ``(frame, "", 0)``."""
    m = _FRAME.fullmatch(frame)
    if m is None:
        return frame, "", 0
    return m.group(1), m.group(2), int(m.group(3))


# The host's choice of profiler lives here, beside the wire format, so that a Pool
# validates it without importing the batch layer.
def parse_profiler(profiler: str) -> tuple[str, list[str]]:
    """``(kind, py-spy options)`` of a ``profiler`` setting: ``"auto"``, ``"py-spy"``,
    or ``"py-spy --native"`` (and ``--rate N``, ``--nonblocking``, ``--gil``).

    Raises ``ValueError`` for anything else, saying what works."""
    if not isinstance(profiler, str):
        raise TypeError(f"profiler must be a str, not {type(profiler).__name__}")
    words = shlex.split(profiler)
    if words == ["auto"]:
        return "auto", []
    if words and words[0] == "py-spy":
        options = words[1:]
        for i, word in enumerate(options):
            if word.startswith("-") and word not in _PY_SPY_OPTIONS:
                raise ValueError(
                    f"profiler {profiler!r}: py-spy option {word!r} is not one fnrun_nb passes "
                    "on; use --native, --rate N, --nonblocking or --gil"
                )
            if not word.startswith("-") and (i == 0 or options[i - 1] not in ("--rate", "-r")):
                raise ValueError(f"profiler {profiler!r}: unexpected {word!r}")
        return "py-spy", options
    hint = ""
    if words and words[0] == "perf":
        hint = (" (Linux perf is not supported: for a native handler in C, Go or Rust, "
                "profile it with perf yourself)")
    raise ValueError(
        f"profiler must be 'auto' (handlers written with fnrun_nb.handler) or 'py-spy' "
        f"(any Python handler), not {profiler!r}{hint}"
    )


def _frame_name(code: CodeType) -> str:
    name = getattr(code, "co_qualname", code.co_name)
    # ";" separates frames and a space ends the stack in the collapsed format.
    return f"{name} ({code.co_filename}:{code.co_firstlineno})".replace(";", ":")


def encode_payload(stacks: dict[str, int], interval: float) -> str:
    """The wire form of one call's collapsed ``stacks`` (``"a;b;c" -> samples``),
    within :data:`MAX_PAYLOAD` characters (rarest stacks merged until it fits)."""
    samples = sum(stacks.values())
    ordered = sorted(stacks.items(), key=lambda kv: -kv[1])
    keep = len(ordered)
    while True:
        lines = [f"{stack} {count}" for stack, count in ordered[:keep]]
        other = sum(count for _, count in ordered[keep:])
        if other:
            lines.append(f"{OTHER_FRAME} {other}")
        text = f"{_HEADER} {samples} {round(interval * 1e6)}\n" + "\n".join(lines)
        payload = base64.b64encode(zlib.compress(text.encode("utf-8"), 6)).decode("ascii")
        if len(payload) <= MAX_PAYLOAD or keep == 0:
            return payload
        keep //= 2


def decode_payload(payload: str) -> tuple[dict[str, int], float]:
    """``(stacks, interval_s)`` of a payload made by :func:`encode_payload`.

    Raises ``ValueError`` for anything else (bad base64, zlib or header, a line
    without a count)."""
    try:
        inflate = zlib.decompressobj()
        # A payload comes from a handler: bound what it may inflate to.
        raw = inflate.decompress(base64.b64decode(payload, validate=True), MAX_TEXT)
        if inflate.unconsumed_tail:
            raise ValueError(f"it inflates to more than {MAX_TEXT} bytes")
        text = raw.decode("utf-8")
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not a call profile: {exc}") from exc
    head, _, body = text.partition("\n")
    parts = head.split(" ")
    if len(parts) != 4 or " ".join(parts[:2]) != _HEADER:
        raise ValueError(f"not a call profile: header {head[:40]!r}")
    interval = int(parts[3]) / 1e6
    stacks: dict[str, int] = {}
    for line in body.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"not a call profile: line {line[:60]!r}")
        stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks, interval


class CallSampler:
    """Samples one thread's stack while a call is marked; see the module doc.

    ``begin()`` and ``end()`` are called by the thread being sampled, around the
    handler function; ``stop_code`` is the code object of the frame that called the
    handler (``serve``): it and the frames above it are left out of every stack.
    """

    def __init__(self, stop_code: CodeType, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self._stop_code = stop_code
        self._sdk_files = frozenset({stop_code.co_filename, __file__})
        self._target = 0
        self._counts: dict[tuple[CodeType, ...], int] = {}
        self._active = False
        self._go = threading.Event()
        # Held by the sampler while it takes a sample: end() takes it once to know
        # that no sample of the call is still being counted.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._switch = 0.0

    def begin(self) -> None:
        """Start sampling the calling thread (starts the sampler thread the first time)."""
        self._target = threading.get_ident()
        self._counts = {}
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fnrun-profile", daemon=True)
            self._thread.start()
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, self.interval / 2))
        self._active = True
        self._go.set()

    def end(self) -> str:
        """Stop sampling; the call's profile as a payload (see :func:`encode_payload`)."""
        self._active = False
        self._go.clear()
        with self._lock:  # the sampler has finished its last sample of this call
            counts, self._counts = self._counts, {}
        sys.setswitchinterval(self._switch)
        names: dict[CodeType, str] = {}
        stacks: dict[str, int] = {}
        for codes, count in counts.items():
            key = ";".join(
                names.get(c) or names.setdefault(c, _frame_name(c)) for c in codes
            )
            stacks[key] = stacks.get(key, 0) + count
        return encode_payload(stacks, self.interval)

    def _run(self) -> None:
        frames = sys._current_frames
        sleep = time.sleep
        lock = self._lock
        while True:
            self._go.wait()
            # The first sample as soon as this thread runs (it waited for the GIL to
            # wake up already): a call of a few milliseconds still gets one.
            while self._active:
                with lock:
                    if not self._active:
                        break
                    frame = frames().get(self._target)
                    if frame is not None:
                        self._sample(frame)
                    del frame  # holds the handler's locals alive otherwise
                sleep(self.interval / 2)

    def _sample(self, frame: FrameType | None) -> None:
        stop = self._stop_code
        codes: list[CodeType] = []
        while frame is not None:
            code = frame.f_code
            if code is stop:
                break
            codes.append(code)
            frame = frame.f_back
        else:
            return  # not inside the handler (between calls): not the handler's time
        # The serving thread already in end() or elsewhere in the SDK (the handler
        # has returned): the SDK's time, not the handler's.
        if codes and codes[-1].co_filename not in self._sdk_files:
            key = tuple(reversed(codes))
            self._counts[key] = self._counts.get(key, 0) + 1
