"""``reproducer``: write a failure as a standalone pytest file that keeps it from
coming back.

The file starts the handler as the failure ran it (command, cwd, process env,
timeout), sends the exact input bytes and env, and asserts either ``ok`` (a
regression test: it fails until the bug is fixed) or the same failure as today
(``expect="failure"``: it documents today's behaviour).  It needs nothing but pytest
and fnrun_nb, and names the handler, the date and the SHA-256 of the handler file it
was written against.  Paths are written relative to the file's own directory when the
handler lives beside it or below a common root, and this interpreter is written as
``sys.executable``, so the file runs on another machine with the same tree.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..storage import _sha256, handler_file
from .calls import describe
from .replayer import row_input
from .shrinker import Shrunk
from .target import Target

if TYPE_CHECKING:
    from .fuzzer import FuzzFailure

__all__ = ["reproducer"]

_EXPECTS = ("ok", "failure")


def reproducer(
    failure: Any,
    path: str | os.PathLike[str],
    *,
    expect: str = "ok",
    handler: str | Sequence[str] | None = None,
) -> Path:
    """Write a pytest file at ``path`` reproducing ``failure``; returns the path.

    ``failure`` is a :class:`~fnrun_nb.batch.forensics.Shrunk`, a
    :class:`~fnrun_nb.batch.forensics.FuzzFailure` or a ``(batch, row_label)`` pair.
    ``expect="ok"`` asserts the call succeeds (fails until the bug is fixed);
    ``expect="failure"`` asserts it fails the same way (outcome and exit code).
    ``handler=`` replaces the command the failure carries.

    Raises ``TypeError`` for another kind of ``failure``, ``ValueError`` for an unknown
    ``expect``, for a failure that is a rejected ``check`` (the check is your code,
    which the file cannot hold), or a batch without inputs; ``OSError`` from writing.
    """
    if expect not in _EXPECTS:
        raise ValueError(f"expect must be 'ok' or 'failure', got {expect!r}")
    spec = _spec(failure, handler)
    target = Path(path)
    text = _render(spec, expect, target.resolve().parent, target.name)
    target.write_text(text, encoding="utf-8")
    return target


def _spec(failure: Any, handler: str | Sequence[str] | None) -> dict[str, Any]:
    from .fuzzer import FuzzFailure

    if isinstance(failure, Shrunk) or isinstance(failure, FuzzFailure):
        if isinstance(failure, FuzzFailure) and failure.check_error is not None:
            raise ValueError(
                f"this failure is the fuzz check's ({failure.check_error}); the call itself "
                "was ok, and a standalone file cannot hold your check"
            )
        data = failure.data if isinstance(failure, Shrunk) else failure.input
        t = Target(failure.command, failure.handler, failure.cwd, failure.process_env,
                   failure.timeout, failure.protocol)
        outcome, code, env = failure.outcome, failure.exit_code, dict(failure.env)
    elif isinstance(failure, tuple) and len(failure) == 2 and hasattr(failure[0], "df"):
        batch, label = failure
        data, env = row_input(batch, label)
        row = batch.df.loc[label]
        outcome = str(row["outcome"])
        code = None if row.isna()["exit_code"] else int(row["exit_code"])
        t = Target.of_batch(batch)
    else:
        raise TypeError(
            "failure must be a Shrunk, a FuzzFailure or a (batch, row_label) pair, "
            f"not {type(failure).__name__}"
        )
    if handler is not None:
        moved = Target.of(handler, timeout=t.timeout, cwd=t.cwd, protocol=t.protocol)
        t = Target(moved.command, moved.name, t.cwd, t.process_env, t.timeout, t.protocol)
    return {"target": t, "data": bytes(data), "env": env, "outcome": outcome, "code": code}


def _path_expr(arg: str, here: Path) -> str | None:
    """A Python expression for an argv word that is a file: ``sys.executable`` for
    this interpreter, a path relative to the test file when it can be, else None."""
    if arg == sys.executable:
        return "sys.executable"
    if not os.path.isabs(arg) or not os.path.exists(arg):
        return None
    return _relative(arg, here)


def _relative(path: str, here: Path) -> str:
    """``str(HERE / "rel")`` when ``path`` and the test file's directory share a root
    below ``/`` (a project tree that moves as a whole), else the absolute path."""
    if os.path.commonpath([os.path.abspath(path), str(here)]) == os.path.sep:
        return repr(os.path.abspath(path))
    return f"str(HERE / {os.path.relpath(path, here)!r})"


def _render(spec: dict[str, Any], expect: str, here: Path, name: str) -> str:
    t: Target = spec["target"]
    words = [_path_expr(a, here) or repr(a) for a in t.command]
    cwd = "None" if t.cwd is None else _relative(t.cwd, here)
    file = handler_file(t.command)
    sha = _sha256(file) if file is not None else None
    where = None if file is None else (
        str(file) if os.path.commonpath([str(file), str(here)]) == os.path.sep
        else os.path.relpath(file, here)
    )
    failure = describe(spec["outcome"], spec["code"])
    data: bytes = spec["data"]
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", f"{Path(t.name.split()[0]).stem}_{failure}").strip("_")
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    if expect == "ok":
        purpose = (
            f"Regression test: the call must be ok.  It fails while the handler still "
            f"ends {failure} on this input, and passes once the bug is fixed."
        )
        check = _OK_CHECK
    else:
        purpose = (
            f"Documents today's behaviour: the call ends {failure}.  It fails when "
            "that changes (a fix, or another failure)."
        )
        check = _FAILURE_CHECK
    head = f'''"""{purpose}

Written by fnrun_nb.reproducer on {today}.
Handler: {t.name}
Handler file: {where or "(none: the command names no file)"} (relative to this file)
Handler file SHA-256 when written: {sha or "(unknown)"}
Failure: {failure} on an input of {len(data)} bytes{" and env keys " + ", ".join(sorted(spec["env"])) if spec["env"] else ""}.
Run it with: pytest {name}
"""
'''
    body = f'''
from __future__ import annotations

import sys
from pathlib import Path

import fnrun_nb
from fnrun_nb import Pool

HERE = Path(__file__).resolve().parent
COMMAND = [{", ".join(words)}]
CWD = {cwd}
PROCESS_ENV = {t.process_env!r}
TIMEOUT = {t.timeout!r}
PROTOCOL = {t.protocol!r}
HANDLER_SHA256 = {sha!r}
DATA = bytes.fromhex({data.hex()!r})  # {data[:40]!r}{"..." if len(data) > 40 else ""}
ENV = {spec["env"]!r}
FAILURE = ({spec["outcome"]!r}, {spec["code"]!r})  # outcome, exit code (-N: signal N)

OUTCOMES = {{
    "crashed": fnrun_nb.HandlerCrashed,
    "timeout": fnrun_nb.InvocationTimeout,
    "protocol_error": fnrun_nb.ProtocolError,
    "unavailable": fnrun_nb.AvailabilityTimeout,
    "start_failed": fnrun_nb.HandlerStartError,
}}


def _outcome(exc: BaseException) -> tuple[str, int | None]:
    for name, cls in OUTCOMES.items():
        if isinstance(exc, cls):
            code = getattr(exc, "exit_code", None)
            if code is None and getattr(exc, "signal", None) is not None:
                code = -int(exc.signal)
            return name, code
    return "crashed", None


def _call() -> tuple[str, int | None, str]:
    with Pool(COMMAND, workers=1, timeout=TIMEOUT, cwd=CWD, process_env=PROCESS_ENV,
              protocol=PROTOCOL) as pool:
        try:
            result = pool.invoke(DATA, env=ENV or None)
        except fnrun_nb.HandlerStartError:
            raise
        except fnrun_nb.FnrunError as exc:
            outcome, code = _outcome(exc)
            return outcome, code, f"{{type(exc).__name__}}: {{exc}}"
    return "ok", None, f"status {{result.status}}"


def test_{slug}() -> None:
{check}'''
    return head + body


_OK_CHECK = '''    outcome, code, detail = _call()
    assert outcome == "ok", f"the handler still fails on this input: {detail}"
'''

_FAILURE_CHECK = '''    outcome, code, detail = _call()
    assert (outcome, code) == FAILURE, f"the handler no longer fails this way: {detail}"
'''
