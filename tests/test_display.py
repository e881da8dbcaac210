"""The pure formatter: snapshots and batch progress to text and HTML (no processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fnrun_nb import display as fmt
from fnrun_nb.pool import PoolSnapshot, WorkerSnapshot, WorkerState

NOW = 1_700_000_000.0


def worker(slot: int = 0, state: WorkerState = WorkerState.IDLE, **kw: object) -> WorkerSnapshot:
    fields: dict = dict(
        slot=slot, state=state, pid=4242 + slot, generation=1, calls=3, total_calls=3,
        call_started=None, deadline=None, rss=24 * 1024 * 1024, last_error=None,
    )
    fields.update(kw)
    return WorkerSnapshot(**fields)


def pool_snap(*workers: WorkerSnapshot, closed: bool = False) -> PoolSnapshot:
    return PoolSnapshot(
        workers=workers, calls=12, failures=1, replacements=1, closed=closed, taken=NOW
    )


@dataclass(frozen=True)
class Progress:
    """A value with the fields of the batch contract's ``BatchProgress``."""

    total: int | None = 100
    done: int = 37
    counts: dict = field(default_factory=lambda: {"ok": 36, "crashed": 1, "timeout": 0})
    p50_ms: float | None = 1.234
    p99_ms: float | None = 98.7
    elapsed_s: float = 1.26
    finished: bool = False


def test_busy_worker_shows_elapsed_against_its_deadline() -> None:
    w = worker(state=WorkerState.BUSY, call_started=NOW - 1.0, deadline=NOW + 3.0)
    v = fmt.worker_view(w, NOW)
    assert (v.label, v.style, v.bar_style) == ("busy", "info", "info")
    assert v.elapsed == pytest.approx(1.0) and v.timeout == pytest.approx(4.0)
    assert v.fraction == pytest.approx(0.25)
    assert "1.00/4 s" in fmt.worker_text(v)


def test_deadline_bar_warns_past_80_percent_and_clips_at_the_deadline() -> None:
    near = fmt.worker_view(worker(state=WorkerState.BUSY, call_started=NOW - 0.9, deadline=NOW + 0.1), NOW)
    assert near.bar_style == "warning"
    late = fmt.worker_view(worker(state=WorkerState.BUSY, call_started=NOW - 5, deadline=NOW - 4), NOW)
    assert late.fraction == 1.0


def test_idle_worker_has_an_empty_bar() -> None:
    v = fmt.worker_view(worker(), NOW)
    assert (v.label, v.style, v.fraction, v.elapsed) == ("idle", "success", 0.0, None)


def test_a_recent_failure_keeps_the_replacement_in_the_failure_style() -> None:
    w = worker(generation=2, last_error="HandlerCrashed: handler process 1 ended (exit code 3)")
    v = fmt.worker_view(w, NOW, failed_recently=True)
    assert (v.label, v.style, v.bar_style) == ("replaced", "danger", "danger")
    assert v.error is not None and "exit code 3" in fmt.worker_text(v)
    # Once the failure is old news, the same worker is just idle and its error hidden.
    calm = fmt.worker_view(w, NOW)
    assert (calm.label, calm.error) == ("idle", None)


def test_crashed_and_closed_states() -> None:
    assert fmt.worker_view(worker(state=WorkerState.CRASHED), NOW).style == "danger"
    assert fmt.worker_view(worker(state=WorkerState.CLOSED), NOW, failed_recently=True).label == "closed"


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (512, "512 B"), (1536, "1.5 KiB"), (24 * 1024 * 1024, "24.0 MiB"), (3 << 30, "3.0 GiB")],
)
def test_format_bytes(n: int | None, text: str) -> None:
    assert fmt.format_bytes(n) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "-"), (float("nan"), "-"), (1.234, "1.23 ms"), (412.4, "412 ms"), (12345.0, "12.3 s")],
)
def test_format_ms(ms: float | None, text: str) -> None:
    assert fmt.format_ms(ms) == text


def test_progress_text_counts_outcomes_and_percentiles() -> None:
    text = fmt.progress_text(Progress())
    assert text == "37/100 (37%) ok 36, crashed 1; p50 1.23 ms, p99 98.7 ms; 1.3 s"
    assert fmt.progress_text(Progress(total=None, finished=True)).startswith("37/? ")
    assert fmt.progress_text(Progress(finished=True)).endswith(", done")


def test_progress_style_vocabulary() -> None:
    assert fmt.progress_style(Progress()) == "info"
    assert fmt.progress_style(Progress(finished=True, counts={"ok": 5})) == "success"
    assert fmt.progress_style(Progress(finished=True)) == "warning"
    assert fmt.progress_style(Progress(finished=True, counts={"ok": 1, "cancelled": 4})) == "danger"


def test_status_line_is_one_compact_line_with_a_letter_per_worker() -> None:
    snap = pool_snap(
        worker(0, WorkerState.BUSY, call_started=NOW, deadline=NOW + 1),
        worker(1),
        worker(2, generation=2, last_error="boom"),
        worker(3, WorkerState.STARTING),
    )
    views = [fmt.worker_view(snap.workers[0], NOW), fmt.worker_view(snap.workers[1], NOW),
             fmt.worker_view(snap.workers[2], NOW, failed_recently=True),
             fmt.worker_view(snap.workers[3], NOW)]
    line = fmt.status_line(snap, views, Progress())
    assert "\n" not in line
    assert line.startswith("fnrun 37/100 (37%)")
    assert "| BIRS |" in line
    assert line.endswith("12 calls, 1 failure, 1 replacement")
    assert "closed, " in fmt.status_line(pool_snap(worker(0, WorkerState.CLOSED), closed=True), [])


def test_monitor_text_and_html() -> None:
    snap = pool_snap(worker(0), worker(1, WorkerState.BUSY, call_started=NOW, deadline=NOW + 2))
    views = [fmt.worker_view(w, NOW) for w in snap.workers]
    text = fmt.monitor_text(snap, views, Progress(), title="fnrun echo.py")
    lines = text.splitlines()
    assert lines[0] == "fnrun echo.py: 2 workers: 1 idle, 1 busy; 12 calls, 1 failure, 1 replacement"
    assert lines[1].startswith("batch 37/100")
    assert lines[2].startswith("  slot 0  idle") and "pid 4242" in lines[2]
    assert "24.0 MiB" in lines[2]
    html = fmt.monitor_html(snap, views, None, title="<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'class="fnrun-state fnrun-state-busy"' in html


def test_error_text_is_escaped_in_html() -> None:
    v = fmt.worker_view(worker(last_error="<script>x</script>"), NOW, failed_recently=True)
    assert "<script>" not in fmt.worker_html(v) + fmt.state_badge_html(v)


def test_a_long_error_keeps_its_reason_whatever_the_path_length() -> None:
    for depth in (1, 8, 40):
        path = "/" + "/".join(["deep"] * depth) + "/handler.py"
        v = fmt.worker_view(
            worker(generation=2, last_error=f"{path}: No such file or directory"),
            NOW,
            failed_recently=True,
        )
        text, markup = fmt.worker_text(v), fmt.worker_html(v)
        assert "handler.py: No such file or directory" in text
        assert "No such file or directory" in markup
        # The full message stays one hover away in HTML.
        assert f'title="{path}: No such file or directory"' in markup


def test_a_long_error_without_a_reason_is_cut_at_its_end() -> None:
    v = fmt.worker_view(worker(last_error="x" * 200), NOW, failed_recently=True)
    assert "(" + "x" * 59 + "…)" in fmt.worker_text(v)


MIB = 1024 * 1024


def test_rss_trend_is_a_sparkline_and_an_arrow() -> None:
    growing = [40 * MIB + i * MIB for i in range(8)]
    assert fmt.rss_trend(growing) == "▁▂▃▄▅▆▇█ ↑"
    assert fmt.rss_trend(growing[::-1]) == "█▇▆▅▄▃▂▁ ↓"
    # allocator noise of a few pages, or under the 256 KiB floor, is steady
    assert fmt.rss_trend([40 * MIB, 40 * MIB + 4096 * 3, 40 * MIB]) == "▁▁▁ →"
    assert fmt.rss_trend([40 * MIB, 40 * MIB + 200 * 1024]) == "▁▆ →"
    assert fmt.rss_trend([40 * MIB] * 5) == "▁▁▁▁▁ →"
    assert fmt.rss_trend([]) == ""
    assert len(fmt.rss_trend(growing * 4, width=12)) == len("▁▂▃▄▅▆▇█▁▂▃▄ ↑")


def test_a_trend_shows_in_text_and_html_only_when_given() -> None:
    w = worker(pid=7, rss=45 * MIB)
    plain = fmt.worker_view(w, now=0.0)
    assert plain.trend is None and "▁" not in fmt.worker_text(plain)
    view = fmt.worker_view(w, now=0.0, rss_history=[40 * MIB, 45 * MIB])
    assert view.trend == "▁█ ↑"
    assert fmt.worker_text(view).endswith("rss  45.0 MiB ▁█ ↑")
    assert 'class="fnrun-rss-trend"' in fmt.worker_html(view) and "▁█ ↑" in fmt.worker_html(view)
