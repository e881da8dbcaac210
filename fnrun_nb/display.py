"""Pure rendering of pool snapshots and batch progress to text and HTML.

::

    PoolSnapshot ──worker_view()──▶ WorkerView ──▶ worker_text() / worker_html()
    BatchProgress ───────────────────────────────▶ progress_text() / progress_style()
    both ──▶ status_line()   (one compact line: the text monitor, like tqdm's meter)
         ──▶ monitor_text()  (a small table: every view's text/plain)
         ──▶ monitor_html()  (the same table as HTML, for non-widget front-ends)

This is the one formatter (tqdm's ``format_meter``): the text monitor prints its
lines, the widget monitor maps :class:`WorkerView` fields onto stock widgets, and both
use :func:`monitor_text` as their ``text/plain``.  Nothing here imports ipywidgets,
IPython or pandas, keeps state, or touches a pool: every function maps values to
strings, so it is tested without processes.

Styles use the ipywidgets ``bar_style`` vocabulary: ``""``, ``"success"``, ``"info"``,
``"warning"``, ``"danger"``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .pool import PoolSnapshot, WorkerSnapshot, WorkerState

__all__ = [
    "STATE_STYLE",
    "BatchProgressLike",
    "WorkerView",
    "format_bytes",
    "format_ms",
    "monitor_html",
    "monitor_text",
    "pool_text",
    "progress_style",
    "rss_trend",
    "progress_text",
    "state_badge_html",
    "status_line",
    "worker_html",
    "worker_text",
    "worker_view",
]

STATE_STYLE: Mapping[str, str] = {
    "idle": "success",
    "busy": "info",
    "starting": "warning",
    "crashed": "danger",
    "replaced": "danger",
    "closed": "",
}
"""Display label -> bar_style.  ``replaced`` is not a ``WorkerState``: it is how a
monitor shows, for a while, a slot whose process failed and was replaced (a crash
lasts milliseconds, too short to see at 10 refreshes a second)."""

# JupyterLab theme colours with fallbacks, so the HTML reads the same outside Lab.
_COLOUR = {
    "success": "var(--jp-success-color1, #388e3c)",
    "info": "var(--jp-info-color1, #0288d1)",
    "warning": "var(--jp-warn-color1, #f57c00)",
    "danger": "var(--jp-error-color1, #d32f2f)",
    "": "var(--jp-ui-font-color2, #757575)",
}

# Letters of the compact line, one per worker: the whole pool fits in a few columns.
_LETTER = {"idle": "I", "busy": "B", "starting": "S", "crashed": "X", "replaced": "R", "closed": "-"}


class BatchProgressLike(Protocol):
    """What the display reads from ``Batch.progress()`` (the batch contract)."""

    @property
    def total(self) -> int | None: ...
    @property
    def done(self) -> int: ...
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def p50_ms(self) -> float | None: ...
    @property
    def p99_ms(self) -> float | None: ...
    @property
    def elapsed_s(self) -> float: ...
    @property
    def finished(self) -> bool: ...


@dataclass(frozen=True)
class WorkerView:
    """One worker as a display shows it."""

    slot: int
    label: str
    """``idle``, ``busy``, ``starting``, ``crashed``, ``replaced`` or ``closed``."""
    style: str
    """bar_style of the label (see :data:`STATE_STYLE`)."""
    pid: int | None
    generation: int
    calls: int
    """Calls served by the current process."""
    rss: int | None
    elapsed: float | None
    """Seconds the call in flight has run (``None`` unless busy)."""
    timeout: float | None
    """That call's run-time limit in seconds."""
    fraction: float
    """``elapsed / timeout`` clipped to [0, 1]; 0 when not busy."""
    bar_style: str
    """Style of the elapsed-vs-deadline bar: ``warning`` past 80 % of the deadline."""
    error: str | None
    trend: str | None = None
    """The RSS trend of the current process (:func:`rss_trend`), when the monitor
    shows one (a pool or batch with ``resources`` on); ``None`` otherwise."""


def worker_view(
    w: WorkerSnapshot,
    now: float,
    *,
    failed_recently: bool = False,
    rss_history: Sequence[int] | None = None,
) -> WorkerView:
    """The display of one worker at wall-clock time ``now``.

    ``failed_recently`` (the monitor's memory of a failure it saw on this slot) turns
    a healthy-looking replacement into ``replaced`` so that the failure stays visible.
    ``rss_history`` (the RSS readings of the current process, oldest first) adds its
    trend; ``None`` shows none.
    """
    label = w.state.value
    if failed_recently and w.state in (WorkerState.IDLE, WorkerState.BUSY, WorkerState.STARTING):
        label = "replaced"
    style = STATE_STYLE[label]
    elapsed = timeout = None
    fraction = 0.0
    bar_style = style
    if w.state is WorkerState.BUSY and w.call_started is not None:
        elapsed = max(0.0, now - w.call_started)
        if w.deadline is not None and w.deadline > w.call_started:
            timeout = w.deadline - w.call_started
            fraction = min(1.0, elapsed / timeout)
        if label == "busy":
            bar_style = "warning" if fraction >= 0.8 else "info"
    return WorkerView(
        slot=w.slot,
        label=label,
        style=style,
        pid=w.pid,
        generation=w.generation,
        calls=w.calls,
        rss=w.rss,
        elapsed=elapsed,
        timeout=timeout,
        fraction=fraction,
        bar_style=bar_style,
        error=w.last_error if label in ("crashed", "replaced") else None,
        trend=None if rss_history is None else rss_trend(rss_history),
    )


# Eight levels, the sparkline blocks of spark(1) and most terminal dashboards.
_SPARKS = "▁▂▃▄▅▆▇█"

TREND_MIN_BYTES = 256 * 1024
"""Below this change between the first and last reading, RSS is ``→`` (steady):
allocators grow and give back memory in pages and arenas, and a trend arrow that
flickered with them would hide the one that matters."""


def rss_trend(history: Sequence[int], width: int = 12) -> str:
    """A sparkline of the last ``width`` RSS readings and an arrow: ``▁▂▃▅▆█ ↑``.

    The arrow compares the first and last reading shown: ``↑`` grew and ``↓`` shrank
    by more than :data:`TREND_MIN_BYTES` and 2 %, ``→`` otherwise.  The sparkline is
    scaled to the readings' range or :data:`TREND_MIN_BYTES`, whichever is larger.
    ``""`` without readings.
    """
    values = [v for v in history[-width:] if v is not None]
    if not values:
        return ""
    low = min(values)
    # Scaled to the readings' range, but never finer than TREND_MIN_BYTES: a few pages
    # of allocator noise stay a flat line, and any real growth fills the height.
    span = max(max(values) - low, TREND_MIN_BYTES)
    top = len(_SPARKS) - 1
    line = "".join(_SPARKS[round((v - low) / span * top)] for v in values)
    change = values[-1] - values[0]
    if abs(change) > max(TREND_MIN_BYTES, 0.02 * values[0]):
        arrow = "↑" if change > 0 else "↓"
    else:
        arrow = "→"
    return f"{line} {arrow}"


# --- numbers ---------------------------------------------------------------------------


def format_bytes(n: int | None) -> str:
    """``23.4 MiB``; ``-`` when unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_ms(ms: float | None) -> str:
    """Three significant digits in ms (``1.23 ms``, ``412 ms``, ``12.3 s``); ``-`` if unknown."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    return f"{ms:.3g} ms"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- text ------------------------------------------------------------------------------


def worker_text(v: WorkerView) -> str:
    """``slot 0  busy      pid 4242  gen 1  calls 17  rss 23.1 MiB  0.21/5 s``."""
    pid = "-" if v.pid is None else str(v.pid)
    text = (
        f"slot {v.slot:<2} {v.label:<9} pid {pid:<7} gen {v.generation:<3} "
        f"calls {v.calls:<6} rss {format_bytes(v.rss):>9}"
    )
    if v.trend:
        text += f" {v.trend}"
    if v.elapsed is not None:
        limit = "?" if v.timeout is None else f"{v.timeout:g}"
        text += f"  {v.elapsed:.2f}/{limit} s"
    if v.error:
        text += f"  ({_first_line(v.error, 60)})"
    return text


def pool_text(snap: PoolSnapshot) -> str:
    """``3 workers: 2 busy, 1 idle; 120 calls, 1 failure, 1 replacement``."""
    states = []
    for state in WorkerState:
        n = snap.count(state)
        if n:
            states.append(f"{n} {state.value}")
    head = "closed" if snap.closed else ", ".join(states)
    return (
        f"{_plural(len(snap.workers), 'worker')}: {head}; {_plural(snap.calls, 'call')}, "
        f"{_plural(snap.failures, 'failure')}, {_plural(snap.replacements, 'replacement')}"
    )


def progress_text(p: BatchProgressLike) -> str:
    """``37/100 (37%) ok 35, crashed 2; p50 1.2 ms, p99 9.8 ms; 1.3 s``."""
    if p.total:
        head = f"{p.done}/{p.total} ({100 * p.done / p.total:.0f}%)"
    else:
        head = f"{p.done}/?"
    counts = ", ".join(f"{k} {n}" for k, n in p.counts.items() if n)
    text = head + (f" {counts}" if counts else "")
    text += f"; p50 {format_ms(p.p50_ms)}, p99 {format_ms(p.p99_ms)}; {p.elapsed_s:.1f} s"
    if p.finished:
        text += ", done"
    return text


def progress_style(p: BatchProgressLike) -> str:
    """``info`` while running; at the end ``success`` if every call was ok, else
    ``danger`` when calls were cancelled and ``warning`` for other failures."""
    if not p.finished:
        return "info"
    failed = {k: n for k, n in p.counts.items() if n and k != "ok"}
    if not failed:
        return "success"
    return "danger" if failed.get("cancelled") else "warning"


def status_line(
    snap: PoolSnapshot,
    views: list[WorkerView] | tuple[WorkerView, ...],
    progress: BatchProgressLike | None = None,
) -> str:
    """One compact line (the text monitor prints one per refresh)::

        fnrun 37/100 (37%) ok 36, crashed 1; p50 12 ms, p99 30 ms; 1.3 s | BBRI | 120 calls, 1 failure

    Workers are letters: B busy, I idle, S starting, X crashed, R replaced, - closed.
    """
    parts = ["fnrun"]
    if progress is not None:
        parts.append(progress_text(progress) + " |")
    parts.append("".join(_LETTER[v.label] for v in views) + " |")
    parts.append(
        ("closed, " if snap.closed else "")
        + f"{_plural(snap.calls, 'call')}, {_plural(snap.failures, 'failure')}, "
        f"{_plural(snap.replacements, 'replacement')}"
    )
    return " ".join(parts)


def monitor_text(
    snap: PoolSnapshot,
    views: list[WorkerView] | tuple[WorkerView, ...],
    progress: BatchProgressLike | None = None,
    *,
    title: str = "fnrun pool",
) -> str:
    """The whole monitor as a few lines of text: title, pool counters, batch, workers."""
    lines = [f"{title}: {pool_text(snap)}"]
    if progress is not None:
        lines.append(f"batch {progress_text(progress)}")
    lines.extend("  " + worker_text(v) for v in views)
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------


def state_badge_html(v: WorkerView) -> str:
    """The worker's state as a coloured badge (classes ``fnrun-state fnrun-state-LABEL``)."""
    colour = _COLOUR[v.style]
    tip = f' title="{html.escape(v.error)}"' if v.error else ""
    return (
        f'<span class="fnrun-state fnrun-state-{v.label}"{tip} style="display:inline-block;'
        f"min-width:5.5em;text-align:center;border-radius:3px;padding:0 4px;"
        f'color:white;background:{colour};font-weight:bold">{v.label}</span>'
    )


def worker_html(v: WorkerView) -> str:
    """pid, generation, calls and RSS of one worker as a short HTML fragment."""
    pid = "-" if v.pid is None else str(v.pid)
    text = (
        f"<code>pid {pid}</code> · gen {v.generation} · {_plural(v.calls, 'call')} · "
        f"rss {format_bytes(v.rss)}"
    )
    if v.trend:
        text += f' <span class="fnrun-rss-trend" title="RSS of this process, last readings">{html.escape(v.trend)}</span>'
    if v.elapsed is not None:
        limit = "?" if v.timeout is None else f"{v.timeout:g}"
        text += f" · {v.elapsed:.1f}/{limit} s"
    if v.error:
        text += f' · <span title="{html.escape(v.error)}">{html.escape(_first_line(v.error, 48))}</span>'
    return f'<span class="fnrun-worker-info" style="white-space:nowrap">{text}</span>'


def monitor_html(
    snap: PoolSnapshot,
    views: list[WorkerView] | tuple[WorkerView, ...],
    progress: BatchProgressLike | None = None,
    *,
    title: str = "fnrun pool",
) -> str:
    """The monitor as a static HTML table (what a non-widget front-end shows)."""
    rows = "".join(
        f"<tr><td>slot {v.slot}</td><td>{state_badge_html(v)}</td>"
        f"<td>{worker_html(v)}</td></tr>"
        for v in views
    )
    batch = ""
    if progress is not None:
        batch = f"<div>batch {html.escape(progress_text(progress))}</div>"
    return (
        f'<div class="fnrun-monitor"><b>{html.escape(title)}</b>: '
        f"{html.escape(pool_text(snap))}{batch}<table>{rows}</table></div>"
    )


def _first_line(text: str, limit: int) -> str:
    """The first line of ``text`` in at most ``limit`` characters.

    Errors read ``subject: reason`` (``/long/path/handler: No such file or directory``),
    and the reason is what the user needs, so a long subject loses its start rather
    than the line losing its end: how long the path to a handler is must not decide
    whether the monitor says why it failed.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    subject, sep, reason = line.rpartition(": ")
    keep = limit - len(sep) - len(reason) - 1
    if sep and keep >= 8:
        return "…" + subject[-keep:] + sep + reason
    return line[: limit - 1] + "…"
