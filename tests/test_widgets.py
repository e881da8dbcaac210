"""The live monitor in this process: widget state, text fallback, refresher lifecycle.

These prove that the monitor *sends* the right updates; tests/test_monitor_browser.py
proves that a person sees them in JupyterLab.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from fnrun_nb import HandlerCrashed, Pool
from fnrun_nb.widgets import MonitorWarning, TextMonitor, WidgetMonitor, monitor

from conftest import TEST_HANDLERS

SLEEPY = str(TEST_HANDLERS / "sleepy.py")


@pytest.fixture
def pool():
    with Pool([sys.executable, SLEEPY], workers=3, timeout=10.0) as p:
        yield p


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def record(widget: Any, trait: str) -> list[Any]:
    """Every value ``trait`` takes from now on (what the front-end is sent)."""
    seen = [getattr(widget, trait)]
    widget.observe(lambda change: seen.append(change["new"]), trait)
    return seen


def badge_label(html: str) -> str:
    match = re.search(r"fnrun-state-(\w+)", html)
    assert match, html
    return match.group(1)


def test_widget_rows_follow_calls_from_other_threads(pool: Pool) -> None:
    m = monitor(pool, mode="widget", hold=0.6)
    assert isinstance(m, WidgetMonitor)
    badges = [record(badge, "value") for _, badge, _ in m._rows]
    bars = [record(bar, "value") for bar, _, _ in m._rows]
    bar_styles = [record(bar, "bar_style") for bar, _, _ in m._rows]

    def work(items: list[str]) -> None:
        for item in items:
            try:
                pool.invoke(item)
            except HandlerCrashed:
                pass

    threads = [
        threading.Thread(target=work, args=(["0.4", "0.4"],)),
        threading.Thread(target=work, args=(["0.4", "crash", "0.4"],)),
        threading.Thread(target=work, args=(["0.4", "0.4"],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The failure is held for `hold` seconds, then the replaced worker looks healthy again.
    wait_for(lambda: all(badge_label(b.value) == "idle" for _, b, _ in m._rows))
    labels = [[badge_label(v) for v in seen] for seen in badges]
    assert all("busy" in seq for seq in labels), labels
    assert all(seq[-1] == "idle" for seq in labels), labels
    failed = [i for i, seq in enumerate(labels) if "replaced" in seq or "crashed" in seq]
    assert len(failed) == 1, labels
    i = failed[0]
    after = labels[i][labels[i].index("replaced") if "replaced" in labels[i] else labels[i].index("crashed"):]
    assert "idle" in after or "busy" in after, labels[i]
    assert "danger" in bar_styles[i]
    assert "exit code 3" in "".join(badges[i])  # the error rides along as a tooltip
    # The elapsed-vs-deadline bars moved while calls ran and were emptied after.
    assert all(max(seq) > 0 for seq in bars), bars
    assert all(seq[-1] == 0 for seq in bars)
    info = m._rows[i][2].value
    assert "gen 2" in info and "pid " in info and "rss " in info
    assert "3 failure" not in m.text() and "1 failure" in m.text()


def test_only_changed_values_are_sent(pool: Pool) -> None:
    m = monitor(pool, mode="widget", rss=False)
    pool.invoke("0")
    settled = m.refreshes + 2  # frames taken after the call ended
    wait_for(lambda: m.refreshes >= settled)
    sent = m.updates
    refreshes = m.refreshes
    wait_for(lambda: m.refreshes >= refreshes + 4)
    assert m.updates == sent  # nothing changed, nothing sent
    pool.invoke("0.3")
    wait_for(lambda: m.updates > sent)


def test_refresher_stops_when_the_pool_closes_and_shows_the_final_state() -> None:
    with Pool([sys.executable, SLEEPY], workers=2, timeout=5.0) as p:
        m = monitor(p, mode="widget")
        p.invoke("0")
        assert m.running
    wait_for(lambda: not m.running, timeout=5.0)
    assert m.error is None
    assert all(badge_label(b.value) == "closed" for _, b, _ in m._rows)
    assert "closed" in m.text().splitlines()[0]


def test_refresher_stops_when_the_view_is_closed(pool: Pool) -> None:
    m = monitor(pool, mode="widget")
    assert m.running
    m.close()
    assert not m.running
    assert m.widget.comm is None
    m.stop()  # idempotent, and a closed view is not redrawn


def test_stop_shows_the_final_state_once_and_is_idempotent(pool: Pool) -> None:
    out = io.StringIO()
    with monitor(pool, mode="text", file=out, inplace=False) as m:
        pool.invoke("0")
    assert not m.running
    m.stop()
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("fnrun III |") and lines[-1].endswith("1 call, 0 failures, 0 replacements")
    assert out.getvalue().endswith("\n")


def test_text_mode_logs_a_compact_line_when_the_content_changes(pool: Pool) -> None:
    out = io.StringIO()
    m = monitor(pool, mode="text", file=out, inplace=False, log_interval=0.1)
    assert isinstance(m, TextMonitor)
    done = threading.Event()
    threading.Thread(target=lambda: (pool.invoke("0.5"), done.set())).start()
    done.wait(10)
    m.stop()
    lines = out.getvalue().splitlines()
    assert any("B" in line.split("|")[0] for line in lines), lines
    assert all(line.startswith("fnrun ") and "\r" not in line for line in lines)
    assert len(lines) == len(set(lines)) or lines[-1] == lines[-2]  # only the final may repeat


def test_text_mode_redraws_one_line_in_place_on_a_terminal(pool: Pool) -> None:
    out = io.StringIO()
    m = monitor(pool, mode="text", file=out, inplace=True)
    pool.invoke("0.3")
    m.stop()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") >= 2


def test_text_mode_on_a_terminal_is_quiet_while_nothing_changes(pool: Pool) -> None:
    # A monitor left running at a terminal prompt must not keep rewriting its line.
    out = io.StringIO()
    m = monitor(pool, mode="text", file=out, inplace=True, interval=0.1, rss=False)
    try:
        wait_for(lambda: m.refreshes >= 8)
        assert out.getvalue().count("\r") == 1, out.getvalue()
    finally:
        m.stop()
    assert out.getvalue().count("\r") == 2 and out.getvalue().endswith("\n")


def test_auto_mode_is_text_outside_a_notebook(pool: Pool) -> None:
    m = monitor(pool, file=io.StringIO())
    try:
        assert isinstance(m, TextMonitor)
    finally:
        m.stop()


def test_pool_monitor_delegates(pool: Pool) -> None:
    m = pool.monitor(mode="text", file=io.StringIO())
    m.stop()
    assert m.title == "fnrun sleepy.py"


def test_widget_mode_without_ipywidgets_is_an_import_error(pool: Pool, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError):
        monitor(pool, mode="widget")


def test_auto_mode_in_a_notebook_without_ipywidgets_warns_once(pool: Pool, monkeypatch) -> None:
    from fnrun_nb import widgets

    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    monkeypatch.setattr(widgets, "_in_notebook", lambda: True)
    monkeypatch.setattr(widgets, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        views = [monitor(pool, file=io.StringIO()) for _ in range(2)]
    for v in views:
        v.stop()
    assert all(isinstance(v, TextMonitor) for v in views)
    msgs = [w for w in caught if issubclass(w.category, MonitorWarning)]
    assert len(msgs) == 1 and "ipywidgets" in str(msgs[0].message)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "tui"}, "mode must be"),
        ({"mode": "text", "interval": 0.01}, "at most 10 refreshes"),
        ({"mode": "text", "interval": float("nan")}, "interval must be"),
        ({"mode": "text", "hold": -1}, "hold must be"),
    ],
)
def test_bad_options_are_named_errors(pool: Pool, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        monitor(pool, **kwargs)


def test_every_view_has_a_readable_text_plain(pool: Pool) -> None:
    m = monitor(pool, mode="widget")
    try:
        bundle = m._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        text = bundle["text/plain"]
        assert text.startswith("fnrun sleepy.py: 3 workers")
        assert text.count("slot ") == 3 and "pid " in text
        assert repr(m.widget) == text == repr(m)
    finally:
        m.stop()
    t = monitor(pool, mode="text", file=io.StringIO())
    t.stop()
    bundle = t._repr_mimebundle_()
    assert bundle["text/plain"].count("slot ") == 3
    assert 'class="fnrun-monitor"' in bundle["text/html"]


def test_a_crash_stays_visible_while_the_replacement_backs_off() -> None:
    from fnrun_nb import CmdInvoker, Input, InvokerPool, InvokerPoolConfig

    handler = [sys.executable, str(TEST_HANDLERS / "faulty.py")]
    starts = {"healthy": True, "failed": 0}

    class Gated:
        def new_invoker(self) -> CmdInvoker:
            if starts["healthy"]:
                return CmdInvoker(handler)
            starts["failed"] += 1
            return CmdInvoker([handler[1] + ".missing"])

    config = InvokerPoolConfig(max_invokers=1, factory=Gated(), max_wait=30, max_runnable_time=10)
    with InvokerPool(config) as pool:
        # A long interval: the only frames are the first one and the refresh() below,
        # so the monitor never sees the millisecond the slot is ``crashed``.
        m = monitor(pool, mode="text", file=io.StringIO(), interval=60, rss=False)
        try:
            starts["healthy"] = False
            with pytest.raises(HandlerCrashed):
                pool.invoke(Input(b"!exit:3"))
            wait_for(lambda: starts["failed"] >= 2)
            assert pool.snapshot().workers[0].state.value == "starting"
            m.refresh()
            text = m.text()
            assert "replaced" in text and "No such file or directory" in text, text
        finally:
            m.close()
            starts["healthy"] = True


LEAKY = str(TEST_HANDLERS / "leaky_rss.py")


def test_rss_trends_show_when_resources_are_on_and_follow_each_process() -> None:
    out = io.StringIO()
    with Pool([sys.executable, LEAKY, "2048"], workers=1, timeout=10.0) as leaky:
        m = monitor(leaky, mode="text", file=out, inplace=False)
        leaky.map([b"x"] * 20, progress=False)
        m.refresh()
        assert m._frame is not None and m._frame.views[0].trend is None  # resources off
        m.stop()
        m = monitor(leaky, mode="text", file=out, inplace=False)
        # A batch with resources turns trends on: 2 MiB a call grows between refreshes.
        leaky.map([b"x"] * 60, resources=True, rate=150, progress=False)
        m.refresh()
        view = m._frame.views[0]
        assert view.trend is not None and view.trend.endswith("↑"), view
        assert len(view.trend) > 4 and view.trend in m.text()
        # A new process starts a new line: its history is not its predecessor's.
        os.kill(view.pid, signal.SIGKILL)
        wait_for(lambda: leaky.snapshot().workers[0].pid not in (None, view.pid)
                 and leaky.snapshot().workers[0].state.value == "idle")
        m.refresh()
        assert m._frame.views[0].trend == "▁ →"
        m.stop()
    with Pool([sys.executable, LEAKY, "2048"], workers=1, resources=True) as p:
        m = monitor(p, mode="text", file=out, inplace=False)
        m.refresh()
        assert m._frame.views[0].trend  # the pool's default: on from the first frame
        m.stop()
