"""The live monitor as a person sees it: JupyterLab in Debian's Chromium.

A notebook runs a batch with ``pool.map(..., monitor=True)`` against a slow handler
that crashes once.  A sampler in the page records, every 50 ms, what the monitor's DOM
shows; the test then asserts on what was on screen while the batch ran (worker rows,
changing states, an advancing progress bar, a crashed worker in the failure style that
comes back) and at the end (final counts).  The updates come from the monitor's
background thread while the cell's thread is blocked in the batch, which is what
ipykernel 7.0 broke.

Screenshots go to tests/output/ (docs/monitor.png is one of them).  Without Chromium
the test is skipped, except in CI, where it fails.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from browser.lab import CHROMIUM_ARGS, JupyterLab, keep_output, require_chromium
from conftest import ROOT, TEST_HANDLERS

OUTPUT = ROOT / "tests" / "output"
SLEEPY = str(TEST_HANDLERS / "sleepy.py")
WORKERS = 3
INPUTS = 60  # 59 calls of 0.3 s and one crash on 3 workers: about 6 s of batch

CELLS = [
    "import sys\n"
    "from fnrun_nb import Pool\n"
    f"pool = Pool([sys.executable, {SLEEPY!r}], workers={WORKERS}, timeout=1.5)",
    f'inputs = ["0.3"] * 24 + ["crash"] + ["0.3"] * {INPUTS - 25}\n'
    "batch = pool.map(inputs, monitor=True)",
    "counts = {k: n for k, n in batch.progress().counts.items() if n}\n"
    "pool.close()\n"
    'print("final", len(batch), counts)',
]

# Records what the monitor shows, every 50 ms, in the page itself (no round trips).
SAMPLER = """() => {
  const s = window.__fnrun = {samples: [], t0: performance.now()};
  s.timer = setInterval(() => {
    const mon = document.querySelector('.fnrun-monitor');
    if (!mon) return;
    const rows = [...mon.querySelectorAll('.fnrun-worker')].map(r => {
      const badge = r.querySelector('.fnrun-state');
      const bar = r.querySelector('.progress-bar');
      return {
        state: badge ? badge.textContent : null,
        colour: badge ? getComputedStyle(badge).backgroundColor : null,
        danger: !!r.querySelector('.progress-bar-danger'),
        info: (r.querySelector('.fnrun-worker-info') || {}).textContent || '',
      };
    });
    const bar = mon.querySelector('.fnrun-batch-bar .progress-bar');
    const text = mon.querySelector('.fnrun-batch-text');
    s.samples.push({
      t: performance.now() - s.t0, rows,
      width: bar ? parseFloat(bar.style.width) : null,
      barClass: bar ? bar.className : '',
      text: text ? text.textContent : '',
    });
  }, 50);
}"""


def run_all(page: Any) -> None:
    # Run All clicked before the kernel is connected is silently lost.
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def samples(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => window.__fnrun.samples")  # type: ignore[no-any-return]


def wait_for_sample(page: Any, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for s in reversed(samples(page)):
            if predicate(s):
                return s
        time.sleep(0.1)
    raise AssertionError(f"the page never showed {what}; last sample: {json.dumps(samples(page)[-1:])}")


@pytest.mark.slow
def test_monitor_updates_live_in_jupyterlab(tmp_path: Path) -> None:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with JupyterLab(tmp_path) as lab:
        name = lab.write_notebook("monitor.ipynb", CELLS)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(lab.url(f"lab/tree/{name}"), timeout=60_000)
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
                page.evaluate(SAMPLER)
                run_all(page)

                # While the batch runs: a crashed worker in the failure style.
                crashed = wait_for_sample(
                    page, lambda s: any(r["danger"] for r in s["rows"]), 60, "a crashed worker"
                )
                cell = page.locator(".jp-Cell", has=page.locator(".fnrun-monitor"))
                shot = tmp_path / "monitor.png"
                cell.screenshot(path=str(shot))
                keep_output(shot, OUTPUT)

                # The end: the final counts, in the finished style.
                final = wait_for_sample(page, lambda s: "done" in s["text"], 60, "the final counts")
                page.wait_for_selector(f"text=/final {INPUTS}/", timeout=30_000)
                end_shot = tmp_path / "monitor_final.png"
                cell.screenshot(path=str(end_shot))
                keep_output(end_shot, OUTPUT)
                seen = samples(page)
            finally:
                browser.close()

    running = [s for s in seen if s["rows"] and "done" not in s["text"]]
    assert running, "the monitor never appeared while the batch ran"
    # Worker rows appear, one per worker, with their pid and generation.
    assert all(len(s["rows"]) == WORKERS for s in seen if s["rows"])
    assert all(re.search(r"pid \d+ · gen \d+", r["info"]) for r in running[-1]["rows"])
    # States change while the batch runs.
    states = {r["state"] for s in running for r in s["rows"]}
    assert "busy" in states and len(states) >= 2, states
    # The progress bar advances: several distinct widths between empty and full.
    widths = [s["width"] for s in running if s["width"] is not None]
    steps = sorted(set(widths))
    assert len([w for w in steps if 0 < w < 100]) >= 3, steps
    assert widths == sorted(widths), "the progress bar went backwards"
    # A crashed worker turns to the failure style (red badge and bar) and comes back.
    slot = next(i for i, r in enumerate(crashed["rows"]) if r["danger"])
    bad = crashed["rows"][slot]
    assert bad["state"] in ("crashed", "replaced")
    red, green, blue = (int(x) for x in re.findall(r"\d+", bad["colour"])[:3])
    assert red > 150 and green < 100 and blue < 100, bad["colour"]
    later = [s["rows"][slot] for s in seen if s["t"] > crashed["t"] and s["rows"]]
    assert any(r["state"] in ("busy", "idle") and not r["danger"] for r in later), later[-3:]
    assert any("gen 2" in r["info"] for r in later)
    # The end: every call counted, one crash, the bar full and in the warning style.
    assert final["width"] == 100
    assert "progress-bar-warning" in final["barClass"]
    expected = rf"^{INPUTS}/{INPUTS} \(100%\) ok {INPUTS - 1}, crashed 1;"
    assert re.search(expected, final["text"]), final["text"]


@pytest.mark.parametrize(("ci", "outcome"), [("true", "fail"), ("", "skip")])
def test_missing_chromium_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: str
) -> None:
    from browser import lab

    monkeypatch.setattr(lab, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="no-chromium is missing"):
        lab.require_chromium()
