"""The handler processes the benchmark sections drive, and how to start them.

::

    ECHO          notebooks/handlers/echo.py   the SDK echo (Python, the handler SDK)
    c_echo()      notebooks/handlers/echo.c    compiled with cc -O2 into a temporary
                                               directory, for the block's duration
    SLEEPER       benchmarks/_sleeper.py       an SDK handler that sleeps, with timing

The C echo answers in a few microseconds, so a case on it measures the host (pool,
recording, frame building) rather than the handler.  Where there is no C compiler
``c_echo`` falls back to the SDK echo and says so in its ``label``, which a section
puts in its notes: a figure is never silently taken on another handler.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

__all__ = ["C_ECHO_SOURCE", "ECHO", "SLEEPER", "Handler", "argv_of", "c_echo"]

_HERE = Path(__file__).resolve().parent
ECHO = _HERE.parent / "notebooks" / "handlers" / "echo.py"
"""The SDK echo handler (answers with the input and the call's env)."""
C_ECHO_SOURCE = _HERE.parent / "notebooks" / "handlers" / "echo.c"
"""The C echo handler's source (hand-encoded protobuf, no SDK)."""
SLEEPER = _HERE / "_sleeper.py"
"""An SDK handler that sleeps for the milliseconds its input names (see the module)."""


class Handler(NamedTuple):
    """A handler to start: ``command`` for ``Pool``, ``argv`` for a raw ``Popen``."""

    command: str
    """The path to give ``Pool`` (a ``.py`` file runs under this interpreter)."""
    argv: list[str]
    """The argv that starts one process of it directly."""
    label: str
    """What it is, for a section's notes (says when the C echo was not available)."""
    compiled: bool
    """True for the compiled C echo, False for a fallback to the SDK echo."""


def argv_of(path: Path | str) -> list[str]:
    """The argv that runs ``path``: a ``.py`` file under this interpreter, else as is."""
    p = str(path)
    return [sys.executable, p] if p.endswith(".py") else [p]


SDK_ECHO = Handler(str(ECHO), argv_of(ECHO), "SDK echo (echo.py)", False)
"""The SDK echo as a :class:`Handler`."""


@contextmanager
def c_echo() -> Iterator[Handler]:
    """The C echo compiled with ``cc -O2`` into a temporary directory (removed after the
    block), or the SDK echo when there is no ``cc`` or it fails to compile.

    Raises nothing for a missing compiler; the fallback's ``label`` says what ran.
    """
    cc = shutil.which("cc")
    if cc is None:
        yield SDK_ECHO._replace(label="SDK echo (echo.py): no C compiler here")
        return
    with tempfile.TemporaryDirectory(prefix="fnrun-bench-") as tmp:
        out = Path(tmp) / "echo_c"
        try:
            subprocess.run([cc, "-O2", "-o", str(out), str(C_ECHO_SOURCE)], check=True,
                           timeout=120, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            yield SDK_ECHO._replace(label=f"SDK echo (echo.py): cc failed ({exc})")
            return
        yield Handler(str(out), [str(out)], "C echo (echo.c, cc -O2)", True)
