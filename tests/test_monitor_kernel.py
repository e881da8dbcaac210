"""The monitor inside a real Jupyter kernel, driven by nbclient (no browser).

This checks what the kernel *sends*: widgets chosen automatically, updates pushed
from the refresher thread while the cell's thread is blocked in a batch, a final
``text/plain`` that a saved notebook keeps, and the text fallback (one warning) when
ipywidgets cannot be imported.  tests/test_monitor_browser.py checks what is seen.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import TEST_HANDLERS

SLEEPY = str(TEST_HANDLERS / "sleepy.py")

CELLS = [
    # 0: a pool, and a monitor of it left running (it watches the next cell's batch
    #    as calls "from another thread").
    "import sys, time\n"
    "from fnrun_nb import Pool\n"
    f"pool = Pool([sys.executable, {SLEEPY!r}], workers=2, timeout=5.0)\n"
    "watch = pool.monitor()\n"
    "watch",
    # 1: a batch with its own monitor; the cell's thread is blocked in map.
    'batch = pool.map(["0.15"] * 8 + ["crash"] + ["0.15"] * 7, monitor=True)',
    # 2: the pool-wide monitor saw that batch too.
    "time.sleep(0.3)\n"
    "print(type(watch).__name__, watch.running, watch.refreshes > 5)\n"
    "print(watch.text().splitlines()[1])",
    # 3: calls from the user's own threads while this cell waits on them: the monitor's
    #    refresher shows them busy (no batch, no monitor of their own).
    "import threading\n"
    'callers = [threading.Thread(target=pool.invoke, args=("0.6",)) for _ in range(2)]\n'
    "for t in callers:\n"
    "    t.start()\n"
    "for t in callers:\n"
    "    t.join()\n"
    'print("threads done", pool.snapshot().calls)',
    # 4: no ipywidgets: text, one warning for two monitors.
    "import warnings\n"
    'sys.modules["ipywidgets"] = None\n'
    "with warnings.catch_warnings(record=True) as caught:\n"
    '    warnings.simplefilter("always")\n'
    "    views = [pool.monitor(), pool.monitor()]\n"
    "for v in views:\n"
    "    v.stop()\n"
    'print("fallback", [type(v).__name__ for v in views], len(caught), caught[0].message)',
    # 5: closing the pool stops the monitor it had.
    "pool.close()\n"
    "time.sleep(0.5)\n"
    'print("after close", watch.running, watch.text().splitlines()[0])',
]


class RecordingClient(NotebookClient):
    """Keeps every widget state update the kernel sent, with the cell that was running."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, dict[str, Any]]] = []

    def handle_comm_msg(self, outs: Any, msg: dict[str, Any], cell_index: int) -> None:
        data = msg["content"].get("data", {})
        if msg["msg_type"] == "comm_msg" and data.get("method") == "update":
            self.updates.append((cell_index, data["state"]))
        super().handle_comm_msg(outs, msg, cell_index)


def text_of(cell: Any) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_monitor_in_a_kernel() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    client = RecordingClient(nb, timeout=90, kernel_name="python3", startup_timeout=60)
    # A loop of our own, closed after: nbclient's sync wrapper keeps one open for good.
    asyncio.run(client.async_execute())
    cells = nb.cells

    # Widgets were chosen automatically, with a readable text/plain beside the view;
    # shown as the cell's value, its saved text/plain was updated to the final state
    # when the pool closed (cell 5), not left at the first frame.
    (out,) = [o for o in cells[0].outputs if "data" in o]
    assert "application/vnd.jupyter.widget-view+json" in out.data
    saved = out.data["text/plain"]
    assert saved.startswith("fnrun sleepy.py: 2 workers"), saved
    assert "workers: closed; 18 calls" in saved, saved

    # The batch's monitor: its bar moved while the cell was blocked in map (only the
    # refresher thread could send those), and the saved text/plain is the final state.
    values = [s["value"] for i, s in client.updates if i == 1 and isinstance(s.get("value"), int)]
    assert len([v for v in values if 0 < v < 16]) >= 3, values
    (out,) = [o for o in cells[1].outputs if "data" in o]
    assert "application/vnd.jupyter.widget-view+json" in out.data
    final = out.data["text/plain"]
    assert "batch 16/16 (100%) ok 15, crashed 1;" in final and "done" in final, final
    styles = [s["bar_style"] for i, s in client.updates if i == 1 and "bar_style" in s]
    assert "danger" in styles  # the crashed worker's row

    # The pool-wide monitor kept running and saw the batch too.
    text = text_of(cells[2])
    assert text.startswith("WidgetMonitor True True"), text
    assert "batch 16/16 (100%)" in text

    # Calls from user threads: the pool-wide monitor showed both workers busy while the
    # cell's own thread only waited in join().
    assert text_of(cells[3]).startswith("threads done 18"), text_of(cells[3])
    titles = [
        s["value"] for i, s in client.updates if i == 3 and "fnrun sleepy.py" in str(s.get("value"))
    ]
    assert any("2 workers: 2 busy" in t for t in titles), titles

    assert "fallback ['TextMonitor', 'TextMonitor'] 1 ipywidgets is not installed" in text_of(cells[4])

    text = text_of(cells[5])
    assert text.startswith("after close False"), text
    assert "closed" in text
