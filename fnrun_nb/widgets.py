"""Live views of a pool's workers: stock ipywidgets in a notebook, text elsewhere.

::

    refresher thread, every `interval` s (<= 10 Hz), never on the hot path
        pool.snapshot(rss=True) ──┐
        pool.active_batch.progress() ──┤──▶ _Frame ──▶ Monitor._render(frame, final)
        failures seen (held `hold` s) ──┘                 ├─ WidgetMonitor: changed traits only,
                                                          │  under hold_sync
                                                          └─ TextMonitor: one compact line

Walk-through.  :func:`monitor` picks the front-end the way ``tqdm.autonotebook`` does:
widgets when running in a Jupyter kernel and ipywidgets imports, text otherwise, with
one warning when a notebook lacks ipywidgets.  Both front-ends share the
:class:`Monitor` base, which owns the refresher thread and turns pool snapshots into
:class:`~fnrun_nb.display.WorkerView` rows with the pure formatter in
:mod:`fnrun_nb.display`; a front-end overrides only ``_render`` (and ``_released``).

The refresher reads only what the pool publishes for displays (``snapshot``, the
active batch's ``progress()``), so the calls it watches never wait for it.  It stops
itself when the pool closes (after showing the final state), when the view is closed,
or on :meth:`Monitor.stop`.  Updates are pushed from that background thread; ipykernel
7.0 dropped such updates (fixed in 7.1), hence the ``ipykernel>=7.1`` requirement.
"""

from __future__ import annotations

import abc
import collections
import functools
import math
import os
import shlex
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from . import display as fmt
from .display import BatchProgressLike, WorkerView
from .pool import PoolSnapshot, WorkerState

__all__ = ["Monitor", "MonitorWarning", "TextMonitor", "WidgetMonitor", "monitor"]

_TREND_READINGS = 24  # readings kept per process for its RSS sparkline

MIN_INTERVAL = 0.1
"""Seconds between refreshes, at least: at most ten updates a second."""


class MonitorWarning(UserWarning):
    """The live monitor fell back to text or stopped updating."""


class _BatchLike(Protocol):
    def progress(self) -> BatchProgressLike: ...


class Observable(Protocol):
    """What a monitor reads from a pool (a :class:`fnrun_nb.Pool` provides it)."""

    @property
    def closed(self) -> bool: ...

    def snapshot(self, *, rss: bool = False) -> PoolSnapshot: ...


@dataclass(frozen=True)
class _Frame:
    snap: PoolSnapshot
    views: tuple[WorkerView, ...]
    progress: BatchProgressLike | None


class Monitor(abc.ABC):
    """A live view of a pool: the base of both front-ends.

    The refresher starts at construction.  ``stop()`` ends it and shows the final
    state; ``close()`` also releases the display.  A monitor is a context manager
    (``stop()`` on exit).  Its ``repr`` is the monitor's current text.
    """

    def __init__(
        self,
        pool: Observable,
        *,
        interval: float = MIN_INTERVAL,
        rss: bool = True,
        hold: float = 2.0,
        title: str | None = None,
        trend: bool | None = None,
    ) -> None:
        if not (isinstance(interval, (int, float)) and math.isfinite(interval)):
            raise ValueError(f"interval must be a number of seconds, got {interval!r}")
        if interval < MIN_INTERVAL:
            raise ValueError(
                f"interval must be >= {MIN_INTERVAL} s (at most 10 refreshes a second), "
                f"got {interval!r}"
            )
        if not hold >= 0:
            raise ValueError(f"hold must be >= 0 seconds, got {hold!r}")
        self.pool = pool
        self.interval = float(interval)
        self.hold = float(hold)
        self.title = title if title is not None else _title_of(pool)
        self._rss = rss
        self._trend = trend
        # slot -> (pid, its RSS readings, oldest first): a new process starts a new line.
        self._rss_seen: dict[int, tuple[int | None, collections.deque[int]]] = {}
        self._batch: _BatchLike | None = None
        self._lock = threading.Lock()  # one refresh at a time (refresher vs refresh())
        self._stopping = threading.Event()
        self._finished = False
        self._seen: dict[int, tuple[int, str | None]] = {}
        self._failed_at: dict[int, float] = {}
        self._frame: _Frame | None = None
        self.error: BaseException | None = None
        """The exception that stopped the refresher, if one did."""
        self.refreshes = 0
        """Frames rendered so far."""
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        # Called by subclasses once their display exists: the first frame is
        # rendered synchronously, so a view is never shown empty.
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="fnrun-monitor", daemon=True)
        self._thread.start()

    # --- the refresher ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.interval):
                if self._released():
                    return
                closed = self.pool.closed
                self.refresh(final=closed)
                if closed:
                    return
        except Exception as exc:  # a broken display must not take the kernel down
            self.error = exc
            warnings.warn(
                f"the fnrun monitor stopped updating: {type(exc).__name__}: {exc}",
                MonitorWarning,
                stacklevel=1,
            )

    def refresh(self, *, final: bool = False) -> None:
        """Read the pool now and update the display (thread-safe)."""
        with self._lock:
            if self._finished and not final:
                return
            frame = self._take_frame()
            self._frame = frame
            self._render(frame, final)
            self.refreshes += 1
            if final:
                self._finished = True

    def _take_frame(self) -> _Frame:
        active = getattr(self.pool, "active_batch", None)
        if active is not None:
            self._batch = active
        snap = self.pool.snapshot(rss=self._rss)
        now = snap.taken
        trend = self._rss and self._trend_on()
        views = []
        for w in snap.workers:
            seen = self._seen.get(w.slot)
            # A crash shows as ``crashed`` for milliseconds (the supervisor then makes
            # the slot ``starting``); a changed last error is the trace it leaves, even
            # while the replacement still backs off (a recycle changes no error).
            if w.state is WorkerState.CRASHED or (
                seen is not None and w.last_error != seen[1]
            ):
                self._failed_at[w.slot] = now
            self._seen[w.slot] = (w.generation, w.last_error)
            recent = now - self._failed_at.get(w.slot, -math.inf) < self.hold
            history = self._rss_history(w.slot, w.pid, w.rss) if trend else None
            views.append(
                fmt.worker_view(w, now, failed_recently=recent, rss_history=history)
            )
        progress = self._batch.progress() if self._batch is not None else None
        return _Frame(snap, tuple(views), progress)

    def _trend_on(self) -> bool:
        """Show RSS trends: as asked, or (``trend=None``) when the pool or its batch
        records ``resources``, i.e. when memory is what the user is looking at."""
        if self._trend is not None:
            return self._trend
        settings = getattr(self.pool, "settings", None)
        if getattr(settings, "resources", False):
            return True
        config = getattr(self._batch, "config", None)
        return bool(isinstance(config, dict) and config.get("resources"))

    def _rss_history(self, slot: int, pid: int | None, rss: int | None) -> list[int]:
        """Add ``rss`` to the readings of ``slot``'s process ``pid``; its readings."""
        seen = self._rss_seen.get(slot)
        if seen is None or seen[0] != pid:
            seen = (pid, collections.deque(maxlen=_TREND_READINGS))
            self._rss_seen[slot] = seen
        if rss is not None:
            seen[1].append(rss)
        return list(seen[1])

    # --- the seam each front-end overrides --------------------------------------------

    @abc.abstractmethod
    def _render(self, frame: _Frame, final: bool) -> None:
        """Show ``frame`` (``final`` once, when the work has ended)."""

    def _released(self) -> bool:
        """True when the display is gone (the refresher then stops)."""
        return False

    # --- control ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the refresher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, batch: _BatchLike | None = None) -> None:
        """Stop refreshing and show the final state; idempotent.

        ``batch`` is the batch whose final progress to show (``Pool.map`` passes the
        batch it ran, which a very short batch may finish before any refresh saw it).
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if batch is not None:
            self._batch = batch
        if not self._released():
            self.refresh(final=True)

    def close(self) -> None:
        """Stop refreshing and release the display."""
        self.stop()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- text ---------------------------------------------------------------------------

    def text(self) -> str:
        """The monitor's current content as text (its ``text/plain``)."""
        frame = self._frame
        if frame is None:
            return f"{self.title}: no snapshot yet"
        return fmt.monitor_text(frame.snap, frame.views, frame.progress, title=self.title)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())


class TextMonitor(Monitor):
    """The monitor as text: one compact line per refresh, like tqdm.

    On a terminal (or in a notebook's output, which honours ``\\r``) the line is
    redrawn in place; in a log (a file or pipe) a new line is written when the
    content changed, at most once per ``log_interval`` seconds.  The final line is
    always written and ends with a newline.
    """

    def __init__(
        self,
        pool: Observable,
        *,
        file: IO[str] | None = None,
        log_interval: float = 1.0,
        inplace: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(pool, **options)
        self.file = file if file is not None else sys.stderr
        if inplace is None:
            isatty = getattr(self.file, "isatty", None)
            inplace = bool(isatty and isatty()) or _in_notebook()
        self.inplace = inplace
        self.log_interval = log_interval
        self._last_line = ""
        self._last_write = -math.inf
        self._start()

    def _render(self, frame: _Frame, final: bool) -> None:
        line = fmt.status_line(frame.snap, frame.views, frame.progress)
        if self.inplace:
            # Redraw only what changed: an idle pool's monitor left running in a
            # terminal must not keep rewriting the line under the user's prompt.
            if not final and line == self._last_line:
                return
            pad = " " * max(0, len(self._last_line) - len(line))
            self.file.write("\r" + line + pad + ("\n" if final else ""))
        else:
            now = time.monotonic()
            if not final and (line == self._last_line or now - self._last_write < self.log_interval):
                return
            self.file.write(line + "\n")
            self._last_write = now
        self._last_line = line
        self.file.flush()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        frame = self._frame
        bundle = {"text/plain": self.text()}
        if frame is not None:
            bundle["text/html"] = fmt.monitor_html(
                frame.snap, frame.views, frame.progress, title=self.title
            )
        return bundle


class WidgetMonitor(Monitor):
    """The monitor as stock ipywidgets (see :func:`monitor`).

    ``widget`` is the top ``VBox`` (class ``fnrun-monitor``): a title with the pool
    counters, the batch's progress bar with counts by outcome and p50/p99 (shown once
    a batch runs), and one row per worker (class ``fnrun-worker``): an
    elapsed-vs-deadline bar, a state badge, pid, generation, calls and RSS.  Only
    changed traits are sent, several at once under ``hold_sync``.
    """

    def __init__(self, pool: Observable, *, show: bool = False, **options: Any) -> None:
        import ipywidgets as W  # type: ignore[import-untyped, unused-ignore]

        super().__init__(pool, **options)
        _check_ipykernel()
        self.updates = 0
        """Trait changes sent to the front-end so far."""
        # Every widget opens a comm and sends its full state, and by default each
        # also opens its own Layout and style widget.  Widgets that look alike share
        # one Layout and one style (ipywidgets allows it; none of these is changed
        # later), which sends less than half the comm_opens a view would otherwise
        # cost per batch: that fixed cost dominates the monitor's price on a short
        # batch (benchmarks/monitor_overhead.py measures it in a kernel).
        # (HTMLStyle and ProgressStyle are not re-exported by ipywidgets 8's top level.)
        from ipywidgets.widgets.widget_int import ProgressStyle  # type: ignore[import-untyped, unused-ignore]
        from ipywidgets.widgets.widget_string import HTMLStyle  # type: ignore[import-untyped, unused-ignore]

        plain = W.Layout()
        html_style = HTMLStyle()
        bar_look = ProgressStyle()
        self._title_html = W.HTML(layout=plain, style=html_style)
        self._bar = W.IntProgress(
            value=0, min=0, max=1, description="batch", bar_style="info",
            layout=W.Layout(width="24em", flex="0 0 auto"), style=bar_look,
        )
        self._bar.add_class("fnrun-batch-bar")
        self._bar_text = W.HTML(layout=plain, style=html_style)
        self._bar_text.add_class("fnrun-batch-text")
        self._batch_row = W.HBox(  # its own Layout: shown (display) once a batch runs
            [self._bar, self._bar_text], layout=W.Layout(display="none", align_items="center")
        )
        self._rows: list[tuple[Any, Any, Any]] = []
        row_boxes = []
        deadline_layout = W.Layout(width="16em", flex="0 0 auto")
        badge_layout = W.Layout(width="7em", flex="0 0 auto")
        row_layout = W.Layout(align_items="center")
        for w in pool.snapshot().workers:
            deadline = W.FloatProgress(
                value=0.0, min=0.0, max=1.0, description=f"slot {w.slot}",
                layout=deadline_layout, style=bar_look,
            )
            deadline.add_class("fnrun-deadline")
            badge = W.HTML(layout=badge_layout, style=html_style)
            badge.add_class("fnrun-badge")
            info = W.HTML(layout=plain, style=html_style)
            box = W.HBox([deadline, badge, info], layout=row_layout)
            box.add_class("fnrun-worker")
            self._rows.append((deadline, badge, info))
            row_boxes.append(box)
        self.widget = _box_class()([self._title_html, self._batch_row, *row_boxes], layout=plain)
        self.widget.add_class("fnrun-monitor")
        self.widget._fnrun_text = self.text
        self._handles: list[Any] = []
        self._start()
        if show:
            self._ipython_display_()

    def _set(self, widget: Any, **traits: Any) -> None:
        changed = {k: v for k, v in traits.items() if getattr(widget, k) != v}
        if not changed:
            return
        self.updates += len(changed)
        if len(changed) == 1:
            ((name, value),) = changed.items()
            setattr(widget, name, value)
            return
        with widget.hold_sync():
            for name, value in changed.items():
                setattr(widget, name, value)

    def _render(self, frame: _Frame, final: bool) -> None:
        snap = frame.snap
        self._set(
            self._title_html,
            value=f"<b>{_esc(self.title)}</b> · {_esc(fmt.pool_text(snap))}",
        )
        p = frame.progress
        if p is not None:
            self._set(self._batch_row.layout, display="flex")
            total = p.total if p.total else max(p.done, 1)
            self._set(self._bar, max=total, value=min(p.done, total), bar_style=fmt.progress_style(p))
            self._set(self._bar_text, value=_esc(fmt.progress_text(p)))
        for v, (deadline, badge, info) in zip(frame.views, self._rows):
            self._set(deadline, value=round(v.fraction, 2), bar_style=v.bar_style)
            self._set(badge, value=fmt.state_badge_html(v))
            self._set(info, value=fmt.worker_html(v))
        if final:
            # Saved notebooks keep the last bundle: make its text/plain the final state.
            for handle in list(self._handles):
                handle.update(self._repr_mimebundle_(), raw=True)

    def _ipython_display_(self) -> None:
        """Display the view with a display id, however it is shown (``show=True``,
        ``display(m)`` or as a cell's value), so that the output a saved notebook keeps
        is updated to the final state when the monitor stops."""
        from IPython.display import display

        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)  # type: ignore[no-untyped-call]
        if handle is not None:
            self._handles.append(handle)

    def _released(self) -> bool:
        return self.widget.comm is None

    def close(self) -> None:
        """Stop refreshing and close every widget (their front-end views go away)."""
        self.stop()
        _close_tree(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def monitor(
    pool: Observable,
    *,
    mode: str = "auto",
    show: bool = False,
    **options: Any,
) -> Monitor:
    """A live view of ``pool``'s workers; returns a started :class:`Monitor`.

    ``mode``: ``"widget"``, ``"text"`` or ``"auto"`` (widgets in a Jupyter kernel with
    ipywidgets, text elsewhere; a notebook without ipywidgets warns once with
    :class:`MonitorWarning` and falls back to text).  ``show=True`` displays the
    widget now (``Pool.map(monitor=True)`` does, because the cell then blocks).
    Options: ``interval`` (s between refreshes, >= 0.1), ``rss`` (read each worker's
    memory), ``hold`` (s a failure stays visible), ``title``, ``trend`` (each worker's
    RSS as a sparkline and an arrow, one reading per refresh: ``True``, ``False``, or
    ``None`` for "when the pool or the batch records ``resources``"); text mode also takes
    ``file``, ``log_interval``, ``inplace``.

    Raises ``ValueError`` for a bad mode or option, ``ImportError`` for
    ``mode="widget"`` without ipywidgets.
    """
    if mode not in ("auto", "widget", "text"):
        raise ValueError(f"mode must be 'auto', 'widget' or 'text', got {mode!r}")
    if mode == "auto":
        mode = "text"
        if _in_notebook():
            if _have_ipywidgets():
                mode = "widget"
            else:
                _warn_no_widgets()
    if mode == "widget":
        return WidgetMonitor(pool, show=show, **options)
    return TextMonitor(pool, **options)


# --- environment ---------------------------------------------------------------------------


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (tqdm.autonotebook's test).  Never imports IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def _have_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, MonitorWarning, stacklevel=4)


def _warn_no_widgets() -> None:
    _warn_once(
        "ipywidgets",
        "ipywidgets is not installed: the fnrun monitor shows text instead of widgets "
        "(pip install ipywidgets)",
    )


def _check_ipykernel() -> None:
    kernel = sys.modules.get("ipykernel")
    version = getattr(kernel, "__version__", "")
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return
    if (major, minor) == (7, 0):
        _warn_once(
            "ipykernel",
            f"ipykernel {version} drops widget updates sent from background threads: "
            "the monitor will not update live (upgrade to ipykernel>=7.1)",
        )


# --- helpers ---------------------------------------------------------------------------------


def _title_of(pool: Any) -> str:
    """``fnrun echo.py --flag``: the handler as a person names it (no interpreter, no
    directories), short enough for a title."""
    command: Sequence[str] | None = getattr(pool, "command", None)
    if not command:
        return "fnrun pool"
    args = list(command)
    if len(args) > 1 and os.path.basename(args[0]).startswith("python"):
        args = args[1:]
    args[0] = os.path.basename(args[0]) or args[0]
    text = shlex.join(args)
    return "fnrun " + (text if len(text) <= 60 else text[:59] + "…")


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=False)


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


@functools.lru_cache(maxsize=None)
def _box_class() -> type:
    import ipywidgets as W

    class MonitorBox(W.VBox):  # type: ignore[misc]
        """A VBox whose ``text/plain`` is the monitor's full text (saved notebooks,
        nbval), where a stock widget shows a truncated constructor call."""

        _fnrun_text: Callable[[], str] | None = None

        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            data = super()._repr_mimebundle_(**kwargs)
            if data is not None and self._fnrun_text is not None:
                data["text/plain"] = self._fnrun_text()
            return data

        def __repr__(self) -> str:
            return self._fnrun_text() if self._fnrun_text is not None else super().__repr__()

    return MonitorBox
