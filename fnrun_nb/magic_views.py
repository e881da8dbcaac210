"""What the magics return or raise: small value objects with text and HTML reprs.

- :class:`JsonResult`: a ``Result`` whose data was decoded as JSON (``--json``).
- ``JsonBatch``: a ``Batch`` of a ``--json`` cell, with its results decoded as JSON
  (``batch.values``); built on first use, so that loading the extension does not
  import pandas.
- :class:`CallFailed`: a handler call that failed, rendered by IPython through
  ``_render_traceback_`` as a few readable lines instead of a library traceback.
- :class:`PoolTable`, :class:`StderrView`: ``%fnrun pools`` and ``%fnrun stderr``.

No IPython import: these are plain values that any front-end can show.
"""

from __future__ import annotations

import functools
import json
import shlex
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from .errors import FnrunError, HandlerCrashed, HandlerStartError, InvocationError
from .values import CallInfo, Result

if TYPE_CHECKING:
    from .batch import Batch

# JsonBatch too, reached as an attribute (module __getattr__); not listed here, so
# that a star import does not build it (and import pandas).
__all__ = ["CallFailed", "JsonResult", "PoolRow", "PoolTable", "StderrView", "json_batch"]

_NOT_JSON = object()
_TAIL_LINES = 12  # stderr lines shown with a failure; the error keeps all of it


class JsonResult(Result):
    """A :class:`~fnrun_nb.values.Result` of a ``--json`` call.

    ``value`` is the data decoded as JSON, or ``None`` when it does not parse
    (``decoded`` tells the two apart).  Equality and hashing are ``Result``'s.
    """

    __slots__ = ("_value", "_decoded")

    _value: Any
    _decoded: bool

    @classmethod
    def of(cls, result: Result) -> JsonResult:
        """Wrap ``result``, decoding its data as JSON when it parses."""
        self = cls(result.status, result.data, result.env, result.info)
        try:
            value = json.loads(result.data)
        except (UnicodeDecodeError, ValueError):
            value = _NOT_JSON
        self._decoded = value is not _NOT_JSON
        self._value = None if value is _NOT_JSON else value
        return self

    @property
    def value(self) -> Any:
        """The data decoded as JSON (``None`` when it does not parse)."""
        return self._value

    @property
    def decoded(self) -> bool:
        """True when the data parsed as JSON."""
        return self._decoded

    def __reduce__(self) -> tuple[Any, ...]:
        return (_json_result, (self.status, self.data, self.env, self.info))

    def _shown(self) -> Result:
        # Show the decoded value pretty-printed in place of the raw JSON bytes.
        if not self.decoded:
            return self
        pretty = json.dumps(self.value, indent=2, ensure_ascii=False)
        return Result._make(self.status, pretty.encode(), self.env, self.info)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        Result._repr_pretty_(self._shown(), p, cycle)

    def _repr_html_(self) -> str:
        return Result._repr_html_(self._shown())


def _json_result(status: int, data: bytes, env: dict[str, str], info: CallInfo | None) -> JsonResult:
    return JsonResult.of(Result(status, data, env, info))


def _decode_json(data: bytes | None) -> Any:
    """``data`` decoded as JSON, or ``_NOT_JSON`` (no data, not UTF-8, not JSON)."""
    if data is None:
        return _NOT_JSON
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON


def json_batch(batch: Batch) -> Batch:
    """``batch`` as a ``JsonBatch``: the same record, with ``values`` and ``decoded``.

    Works on any finished batch, one loaded by ``Batch.load`` included (a saved
    ``JsonBatch`` loads as a plain ``Batch``: its record is a plain batch record).
    """
    return _json_batch_class().of(batch)  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    # ``JsonBatch`` subclasses Batch, whose module imports pandas: build it on first use.
    if name == "JsonBatch":
        return _json_batch_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _json_batch_class() -> Any:
    import pandas as pd

    from .batch import Batch

    class JsonBatch(Batch):
        """The ``Batch`` of a ``--json`` cell: a plain batch record (``df``, ``save``,
        ``compare``... are ``Batch``'s) whose results are also decoded as JSON.

        ``values`` holds each row's data decoded as JSON, ``None`` where it does not
        parse or the call returned no data; ``decoded`` tells the two ``None``s apart.
        Both are Series on ``df``'s index, computed once: ``batch.df.assign(json=
        batch.values)`` makes them a column.  They are not in ``df`` because a column of
        arbitrary JSON values cannot be written to parquet (``save``).
        """

        _decoded_values: list[Any] | None = None

        @classmethod
        def of(cls, batch: Batch) -> JsonBatch:
            """A JsonBatch of ``batch``'s finished record and run facts."""
            new = cls.from_frame(
                batch.df, command=batch.command, handler=batch.handler, config=batch.config,
                workers=batch.workers, interrupted=batch.interrupted, wall_s=batch.wall_s,
                started_at=batch.started_at, inputs=batch.inputs,
            )
            assert isinstance(new, cls)  # from_frame builds cls
            new.metadata = dict(batch.metadata)
            return new

        def _decoded_list(self) -> list[Any]:
            if self._decoded_values is None:
                self._decoded_values = [_decode_json(d) for d in self.df["data"]]
            return self._decoded_values

        @property
        def values(self) -> pd.Series:
            """Each row's data decoded as JSON (``None`` when it does not parse)."""
            return pd.Series(
                [None if v is _NOT_JSON else v for v in self._decoded_list()],
                index=self.df.index, name="json", dtype=object,
            )

        @property
        def decoded(self) -> pd.Series:
            """True for the rows whose data parsed as JSON."""
            return pd.Series(
                [v is not _NOT_JSON for v in self._decoded_list()],
                index=self.df.index, name="decoded", dtype=bool,
            )

        def _values_line(self) -> str:
            n = sum(v is not _NOT_JSON for v in self._decoded_list())
            return f"batch.values: {n} of {len(self)} results decoded as JSON"

        def _repr_pretty_(self, p: Any, cycle: bool) -> None:
            super()._repr_pretty_(p, cycle)
            if not cycle and self.finished:
                p.text("\n" + self._values_line())

        def _repr_html_(self) -> str:
            html = super()._repr_html_()
            if not self.finished:
                return html
            line = escape(self._values_line()).replace(
                "batch.values", "<code>batch.values</code>", 1
            )
            return html + f"<div style='color:#666'>{line}</div>"

    # Named as the module's attribute it is reached by (reprs, pickle by reference).
    JsonBatch.__module__ = __name__
    JsonBatch.__qualname__ = "JsonBatch"
    return JsonBatch


class CallFailed(Exception):
    """A ``%%fnrun`` call failed; ``error`` is the fnrun_nb error (also ``__cause__``).

    IPython shows it through ``_render_traceback_``: what happened, how the process
    ended (exit code or signal), the tail of its stderr, and the handler command.
    """

    def __init__(self, error: FnrunError, handler: str) -> None:
        self.error = error
        self.handler = handler
        super().__init__(f"{type(error).__name__}: {error}")

    def lines(self) -> list[str]:
        """The rendering, one string per line; the reason is said once."""
        err = self.error
        if isinstance(err, HandlerStartError):
            # The reason reads "<how the process ended>; stderr:\n<tail>": the first
            # line says how, the stderr block shows the tail.  The resolved command is
            # shown when it differs from HANDLER: which interpreter ran is often why.
            how, _, tail = err.reason.partition("; stderr:\n")
            out = [f"{type(err).__name__}: cannot start the handler: {how}",
                   f"  handler: {self.handler}"]
            command = shlex.join(err.command)
            if command != self.handler:
                out.append(f"  command: {command}")
        else:
            first = str(err).splitlines()[0] if str(err) else ""
            out = [f"{type(err).__name__}: {first}", f"  handler: {self.handler}"]
            tail = getattr(err, "stderr_tail", "")
        info = err.info
        if info is not None and info.worker is not None:
            out.append(f"  worker {info.worker}, pid {info.pid}, generation {info.generation}")
        if isinstance(err, HandlerCrashed):
            if err.signal is not None:
                out.append(f"  killed by {err.signal.name}")
            elif err.exit_code is not None:
                out.append(f"  exit code {err.exit_code}")
        tail_lines = tail.rstrip().splitlines()
        if tail_lines:
            shown = tail_lines[-_TAIL_LINES:]
            more = len(tail_lines) - len(shown)
            out.append("  stderr" + (f" (last {len(shown)} lines)" if more else "") + ":")
            out.extend("    " + ln for ln in shown)
        if isinstance(err, InvocationError):
            out.append("  the pool replaced the process; the next call gets a fresh one")
        return out

    def _render_traceback_(self) -> list[str]:
        return self.lines()

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass(frozen=True)
class PoolRow:
    """One live pool of the magics."""

    handler: str
    command: str
    cwd: str
    workers: int
    """Handler processes (per Dask worker, for a ``--dask`` pool)."""
    timeout: float
    max_wait: float
    calls: int
    failures: int
    replacements: int | None
    """``None`` for a Dask pool: its workers replace their processes unseen."""
    uptime: float
    where: str = "local"
    """``"local"``, or ``"dask <scheduler address>"`` for a ``--dask`` pool."""


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# The handler as the user named it; the resolved argv (absolute paths, interpreter)
# differs per machine, so it stays on the row (``PoolRow.command``) and out of the
# rendering, which saved notebooks keep.
_HEAD = ("command", "workers", "calls", "failures", "uptime")


@dataclass(frozen=True)
class PoolTable:
    """``%fnrun pools``: the live pools, as a value with text and HTML reprs."""

    rows: tuple[PoolRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def _head(self) -> tuple[str, ...]:
        # ``where`` only once a --dask pool is live: most kernels never have one.
        if all(r.where == "local" for r in self.rows):
            return _HEAD
        return (*_HEAD[:1], "where", *_HEAD[1:])

    def _cells(self) -> list[tuple[str, ...]]:
        wide = len(self._head()) > len(_HEAD)
        return [
            (r.handler, *((r.where,) if wide else ()), str(r.workers), str(r.calls),
             str(r.failures), _uptime(r.uptime))
            for r in self.rows
        ]

    def __repr__(self) -> str:
        if not self.rows:
            return "no live fnrun pools"
        head = self._head()
        cells = [head, *self._cells()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>no live fnrun pools</p>"
        head = "".join(f"<th>{h}</th>" for h in self._head())
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
            for row in self._cells()
        )
        return f'<table class="fnrun-pools"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


@dataclass(frozen=True)
class StderrView:
    """``%fnrun stderr HANDLER``: recent stderr of each worker, by slot."""

    handler: str
    by_worker: dict[int, str]

    def __repr__(self) -> str:
        out = [f"stderr of {self.handler}:"]
        for slot, text in sorted(self.by_worker.items()):
            text = text.rstrip()
            out.append(f"--- worker {slot}" + ("" if text else " (empty)"))
            if text:
                out.append(text)
        return "\n".join(out)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        parts = [f"<div><b>stderr of {escape(self.handler)}</b>"]
        for slot, text in sorted(self.by_worker.items()):
            text = text.rstrip()
            parts.append(f"<div>worker {slot}{'' if text else ' (empty)'}</div>")
            if text:
                parts.append(f'<pre style="margin:2px 0">{escape(text)}</pre>')
        parts.append("</div>")
        return "".join(parts)
