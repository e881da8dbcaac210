"""Plots render with the Agg backend and hold the artists they promise."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import matplotlib
import numpy as np
import pytest
from _frames import make_record
from conftest import TEST_HANDLERS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402

from fnrun_nb import Pool  # noqa: E402
from fnrun_nb.batch import Batch  # noqa: E402
from fnrun_nb.batch.plot import BatchPlot  # noqa: E402

SLEEPY = TEST_HANDLERS / "sleepy.py"


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded() -> None:
    """Draw every kind of plot once before the leak check starts: matplotlib opens
    its font files on first use and keeps them open for the process's life."""
    rng = np.random.default_rng(2)
    a = Batch.from_frame(make_record(rng.lognormal(0, 0.3, 50)))
    a.compare(make_record(rng.lognormal(0, 0.3, 50))).plot().canvas.draw()
    for ax in (a.plot.timeline(), a.plot.warmup(), a.plot.ecdf(logx=True), a.plot.hist()):
        ax.figure.canvas.draw()
    plt.close("all")


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def crashy_batch() -> Batch:
    # Three workers, short sleeps, two crashes: failures and replacements to draw.
    inputs = ["0.01"] * 20 + ["crash"] + ["0.01"] * 20 + ["crash"] + ["0.01"] * 10
    with Pool(str(SLEEPY), workers=3, timeout=10) as pool:
        return pool.map(inputs, progress=False)


def _bars(ax: plt.Axes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in ax.collections:
        gid = c.get_gid() or ""
        if isinstance(c, PolyCollection) and gid.startswith("calls:"):
            counts[gid[6:]] = counts.get(gid[6:], 0) + len(c.get_paths())
    return counts


def test_timeline_one_lane_per_worker_one_bar_per_call(crashy_batch: Batch) -> None:
    df = crashy_batch.df
    ax = crashy_batch.plot.timeline()
    lanes = [t.get_text() for t in ax.get_yticklabels()]
    assert lanes == [f"worker {w}" for w in sorted(df["worker"].dropna().unique())]
    bars = _bars(ax)
    started = df.dropna(subset=["started"])
    assert sum(bars.values()) == len(started)
    assert bars["crashed"] == 2 and bars["ok"] == (started["outcome"] == "ok").sum()
    # A replacement is drawn where a lane's generation changes: once per crash here.
    ticks = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(ticks) == 1 and ticks[0].get_gid() == "replacements"
    assert len(ticks[0].get_segments()) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ok", "crashed", "cold", "replacement"]
    # Cold calls are hatched: one per process that served a call.
    cold = [c for c in ax.collections if c.get_gid() == "cold"]
    assert sum(len(c.get_paths()) for c in cold) == df["cold"].sum()
    assert df["cold"].sum() == df.dropna(subset=["started"])["pid"].nunique()
    ax.figure.canvas.draw()


def test_timeline_lanes_on_dask_name_the_engine_worker() -> None:
    df = make_record(np.ones(8), workers=2)
    df["dask_worker"] = ["tcp://a"] * 4 + ["tcp://b"] * 4
    ax = BatchPlot(df).timeline()
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "worker tcp://a:0", "worker tcp://a:1", "worker tcp://b:0", "worker tcp://b:1",
    ]
    assert sum(_bars(ax).values()) == 8


def test_hist_and_ecdf(crashy_batch: Batch) -> None:
    ok = (crashy_batch.df["outcome"] == "ok").sum()
    ax = crashy_batch.plot.hist(bins=20)
    assert len(ax.patches) == 20
    assert sum(p.get_height() for p in ax.patches) == ok
    ax = crashy_batch.plot.ecdf(logx=True)
    assert ax.get_xscale() == "log"
    (line,) = ax.get_lines()
    assert len(line.get_xdata()) == ok and line.get_ydata()[-1] == pytest.approx(1.0)
    ax = crashy_batch.plot.ecdf(by="worker")
    assert len(ax.get_lines()) == crashy_batch.df["worker"].nunique()


def test_warmup_plot_marks_the_settle_point() -> None:
    service = np.random.default_rng(0).lognormal(0, 0.2, 200)
    service[:4] += 30
    ax = BatchPlot(make_record(service, workers=4)).warmup()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "settles after 1" in labels and "median" in labels
    ax.figure.canvas.draw()


def test_comparison_plot_has_both_ecdfs_and_the_ratio() -> None:
    rng = np.random.default_rng(1)
    a = make_record(rng.lognormal(0, 0.3, 500))
    b = make_record(rng.lognormal(0, 0.3, 500) * 2)
    cmp = Batch.from_frame(a).compare(b)
    fig = cmp.plot()
    left, right = fig.axes
    assert [line.get_label() for line in left.get_lines()] == ["A", "B"]
    assert fig._suptitle is not None and fig._suptitle.get_text() == cmp.verdict
    assert len(right.patches) > 10  # the bootstrap histogram
    fig.canvas.draw()


def test_missing_matplotlib_names_the_plot_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"fnrun-nb\[plot\]"):
        BatchPlot(make_record(np.ones(3))).hist()
