"""The per-worker view and the timeline of a real Dask batch: slots are keyed by
``dask_worker`` and ``worker``, and replacements are counted per slot.

One in-process ``LocalCluster`` (threads, no worker processes: it starts in a fraction
of the time) serves the module.  Its threads live across tests, so this module
replaces the leak check as ``test_dask.py`` does: after each test no process may be
left (the pools' handlers are children of this process here); after the module,
nothing the cluster started may be left at all (see ``cluster``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _frames import make_record

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.collections import LineCollection, PolyCollection

from fnrun_nb.batch import Batch
from fnrun_nb.dask import DaskPool

from _procs import descendants as _children
from _procs import open_fds as _fds
from _procs import wait_until as _wait_until

PROBE = str(Path(__file__).resolve().parent / "handlers" / "dask_probe.py")

pytestmark = pytest.mark.timeout(90)








@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two Dask workers as threads of this process."""
    # distributed's offload thread is process-global and lives for ever once started;
    # start it now so that it is part of the baseline.
    from distributed.utils import _offload_executor

    _offload_executor.submit(int).result()
    # matplotlib opens its font files on first use and keeps them open for the
    # process's life: draw a timeline once before the baseline too.
    Batch.from_frame(make_record(np.ones(4))).plot.timeline().figure.canvas.draw()
    plt.close("all")
    threads_before = set(threading.enumerate())
    fds_before = _fds()
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,
    )
    try:
        yield cluster
    finally:
        cluster.close()
    assert _wait_until(lambda: not _children()), _children()
    assert _wait_until(lambda: set(threading.enumerate()) <= threads_before), [
        t.name for t in set(threading.enumerate()) - threads_before
    ]
    assert _wait_until(lambda: _fds() <= fds_before), sorted(_fds() - fds_before)


@pytest.fixture(autouse=True)
def no_leaks(cluster: distributed.LocalCluster) -> Iterator[None]:
    """This module's leak check (it overrides the conftest one; see the docstring)."""
    yield
    if not _wait_until(lambda: not _children()):
        pytest.fail(f"left behind: {[p.cmdline() for p in _children()]}", pytrace=False)


@pytest.fixture(scope="module")
def crashing_batch(cluster: distributed.LocalCluster) -> Batch:
    """Six chunks of ``ok, crash`` on one handler process per Dask worker: every
    process the batch sees ends with a crash, including the last one of each slot."""
    inputs = [f"ok-{i // 2}" if i % 2 == 0 else "crash" for i in range(12)]
    with (
        distributed.Client(cluster, set_as_default=False) as client,
        DaskPool(client, PROBE, workers=1, timeout=10.0) as pool,
    ):
        return pool.map(inputs, chunk_size=2, progress=False)


def test_by_worker_on_a_dask_batch_keys_slots_and_counts_replacements(
    crashing_batch: Batch,
) -> None:
    df = crashing_batch.df
    assert df["outcome"].tolist() == ["ok", "crashed"] * 6
    table = crashing_batch.by_worker()
    assert table.index.names == ["dask_worker", "worker"]
    slots = df.groupby(["dask_worker", "worker"]).size()
    assert list(table.index) == list(slots.index)
    # Chunks spread over both Dask workers; each has its own slot 0.
    assert df["dask_worker"].nunique() == 2 and set(df["worker"]) == {0}
    assert table["calls"].tolist() == slots.tolist()
    crashes = df[df["outcome"] == "crashed"].groupby(["dask_worker", "worker"]).size()
    assert table["failures"].tolist() == crashes.tolist()
    # Every crash ended its process and the slot's pool replaced it, the crash that
    # was a slot's last call included: as many replacements as crashes, slot by slot.
    assert table["replacements"].tolist() == crashes.tolist()
    assert table["processes"].tolist() == df.groupby(["dask_worker", "worker"])[
        "pid"].nunique().tolist()
    busy = df.groupby(["dask_worker", "worker"])["service_ms"].sum() / 1e3
    np.testing.assert_allclose(table["busy_s"], busy.to_numpy())
    ok = df[df["outcome"] == "ok"].groupby(["dask_worker", "worker"])["service_ms"]
    np.testing.assert_allclose(table["service_p50_ms"], ok.median().to_numpy())


def test_timeline_of_a_dask_batch_one_lane_per_slot_one_bar_per_call(
    crashing_batch: Batch,
) -> None:
    df = crashing_batch.df
    try:
        ax = crashing_batch.plot.timeline()
        lanes = [t.get_text() for t in ax.get_yticklabels()]
        assert lanes == [f"worker {d}:{w}" for d, w in crashing_batch.by_worker().index]
        bars: dict[str, int] = {}
        for c in ax.collections:
            gid = c.get_gid() or ""
            if isinstance(c, PolyCollection) and gid.startswith("calls:"):
                bars[gid[6:]] = bars.get(gid[6:], 0) + len(c.get_paths())
        assert bars == {"ok": 6, "crashed": 6}
        # A tick where a lane's process changed between two of its calls: each crash
        # but the last of each lane is followed by a call on the new process.
        (ticks,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(ticks.get_segments()) == 6 - df["dask_worker"].nunique()
        ax.figure.canvas.draw()
    finally:
        plt.close("all")


def test_percentiles_by_worker_on_a_dask_batch_keeps_slots_apart(crashing_batch: Batch) -> None:
    # Slot 0 exists on each Dask worker: grouping by the slot number alone would merge
    # two workers' calls into one group.
    table = crashing_batch.percentiles(q=50, by="worker")
    assert table.index.names == ["dask_worker", "worker", "metric"]
    ok = crashing_batch.df[crashing_batch.df["outcome"] == "ok"]
    medians = ok.groupby(["dask_worker", "worker"])["service_ms"].median()
    got = table.xs("service_ms", level="metric")["p50"]
    assert list(got.index) == list(medians.index) and len(got) == 2
    np.testing.assert_allclose(got.to_numpy(), medians.to_numpy())


def test_a_dask_batch_saves_and_loads_with_its_columns_and_dtypes(
    crashing_batch: Batch, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    path = crashing_batch.save(tmp_path / "dask.parquet")
    loaded = Batch.load(path)
    assert list(loaded.df.columns) == list(crashing_batch.df.columns)
    assert (loaded.df.dtypes == crashing_batch.df.dtypes).all()
    assert loaded.df["dask_worker"].tolist() == crashing_batch.df["dask_worker"].tolist()
    assert loaded.df["outcome"].tolist() == crashing_batch.df["outcome"].tolist()
    assert loaded.by_worker().equals(crashing_batch.by_worker())


def test_profile_rows_of_a_dask_batch_runs_on_a_new_local_pool(
    cluster: distributed.LocalCluster,
) -> None:
    # A Dask batch has no local pool: its rows run again on one started from its record.
    import sys

    hot = [sys.executable, str(Path(__file__).resolve().parent / "handlers" / "hot_parts.py")]
    with (
        distributed.Client(cluster, set_as_default=False) as client,
        DaskPool(client, hot, workers=1, timeout=30.0) as pool,
    ):
        batch = pool.map([b"slow", b"fast"] * 2, chunk_size=2, progress=False)
    assert batch._ran_on() is None and (batch.df["outcome"] == "ok").all()
    profile = batch.profile_rows([0, 2])
    assert profile.calls == 2 and profile.failed == 0
    assert profile.top()["function"].iloc[0] == "slow_part"
    assert "fast_part" not in profile.top(None)["function"].tolist()
