"""One schema on Dask: a DaskPool batch's ``df`` has exactly the dtypes of ``COLUMNS``
plus ``host`` and ``dask_worker`` with those of ``OPTIONAL_COLUMNS``, whatever its
rows are (ok, failed, lost chunks, cancelled by Ctrl-C, none), also once saved and
loaded, and concatenated with a local batch.

One ``distributed.LocalCluster`` with two worker processes serves the module; as in
``test_dask.py`` its processes live across tests, so this module replaces the leak
check: after each test no handler process may be left, and after the module nothing
at all (see ``cluster``).
"""

from __future__ import annotations

import logging
import multiprocessing.resource_tracker
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from fnrun_nb import Pool  # noqa: E402
from fnrun_nb._watchdog import WATCHDOG_NAME  # noqa: E402
from fnrun_nb.batch import Batch  # noqa: E402
from fnrun_nb.dask import DaskPool  # noqa: E402
from fnrun_nb.magic_views import json_batch  # noqa: E402

from _procs import descendants as _descendants  # noqa: E402
from _procs import open_fds as _fds  # noqa: E402
from _procs import wait_until as _wait_until  # noqa: E402
from _schema import assert_schema  # noqa: E402

PROBE = str(Path(__file__).resolve().parent / "handlers" / "dask_probe.py")

pytestmark = pytest.mark.timeout(120)


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _handlers() -> list[psutil.Process]:
    """Handler processes: the children of the Dask worker processes."""
    me = psutil.Process().pid
    out = []
    for p in _descendants():
        try:
            if p.ppid() != me and WATCHDOG_NAME not in _cmdline(p):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    from distributed.utils import _offload_executor

    # distributed's offload thread lives for ever once started: make it baseline.
    _offload_executor.submit(int).result()
    threads_before = set(threading.enumerate())
    fds_before = _fds()
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,
    )
    try:
        yield cluster
    finally:
        cluster.close()
        # multiprocessing's spawn starts a resource tracker that outlives the cluster.
        multiprocessing.resource_tracker._resource_tracker._stop()
    assert _wait_until(lambda: not _descendants(), 10), [_cmdline(p) for p in _descendants()]
    assert _wait_until(lambda: set(threading.enumerate()) <= threads_before, 10), [
        t.name for t in set(threading.enumerate()) - threads_before
    ]
    assert _wait_until(lambda: _fds() <= fds_before, 10), sorted(_fds() - fds_before)


@pytest.fixture(autouse=True)
def no_leaks(cluster: distributed.LocalCluster) -> Iterator[None]:
    """This module's leak check (it overrides the conftest one; see the docstring)."""
    yield

    def clean() -> bool:
        children = psutil.Process().children()
        return not _handlers() and all(
            "spawn_main" in _cmdline(p) or "resource_tracker" in _cmdline(p) for p in children
        )

    if not _wait_until(clean, 10):
        left = [f"{p.pid} {_cmdline(p)}" for p in _descendants()]
        pytest.fail(f"left behind: {left}", pytrace=False)


def _interrupted(dpool: DaskPool) -> Batch:
    main = threading.get_ident()
    timer = threading.Timer(0.8, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            dpool.map(["sleep:300"] * 16, chunk_size=2, progress=False)
    finally:
        timer.cancel()
        timer.join()
    batch = dpool.last_batch
    assert batch is not None and batch.interrupted
    return batch


@pytest.fixture(scope="module")
def batches(
    cluster: distributed.LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Every shape a Dask batch record comes in, built once (the pools are closed)."""
    tmp = tmp_path_factory.mktemp("schema-dask")
    out: dict[str, Any] = {}
    with distributed.Client(cluster, set_as_default=False) as client:
        with DaskPool(client, PROBE, workers=2, timeout=2.0) as dpool:
            out["all ok"] = dpool.map([f"in-{i}" for i in range(8)], chunk_size=2,
                                      progress=False)
            out["some failed"] = dpool.map(["ok-1", "crash", "fail", "ok-2"], chunk_size=1,
                                           progress=False)
            out["all failed"] = dpool.map(["crash"] * 3, chunk_size=1, progress=False)
            out["empty"] = dpool.map([], progress=False)
            out["interrupted (Ctrl-C)"] = _interrupted(dpool)
        with DaskPool(client, PROBE, workers=1, timeout=2.0) as dpool:
            client.unregister_worker_plugin(dpool.plugin_name)  # chunks find no pool
            out["chunks without a pool"] = dpool.map(["x"] * 4, chunk_size=2, progress=False)
    assert set(out["interrupted (Ctrl-C)"].df["outcome"]) <= {"ok", "cancelled"}
    assert "cancelled" in set(out["interrupted (Ctrl-C)"].df["outcome"])
    assert set(out["chunks without a pool"].df["outcome"]) == {"start_failed"}
    assert set(out["all failed"].df["outcome"]) == {"crashed"}
    for name in ("some failed", "empty", "interrupted (Ctrl-C)"):
        path = out[name].save(tmp / f"{len(out)}.parquet")
        out[f"loaded from parquet: {name}"] = Batch.load(path)
    out["JsonBatch"] = json_batch(out["some failed"])
    return out


SHAPES = [
    "all ok", "some failed", "all failed", "empty", "interrupted (Ctrl-C)",
    "chunks without a pool", "loaded from parquet: some failed",
    "loaded from parquet: empty", "loaded from parquet: interrupted (Ctrl-C)", "JsonBatch",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_dask_batch_has_exactly_the_schema(batches: dict[str, Any], shape: str) -> None:
    df = batches[shape].df
    assert_schema(df)
    assert list(df.columns)[-2:] == ["host", "dask_worker"]


def test_pd_concat_of_a_dask_and_a_local_record_has_exactly_the_schema(
    batches: dict[str, Any],
) -> None:
    with Pool(PROBE, workers=1) as pool:
        local = pool.map(["a", "crash"], progress=False)
    for parts in ([local.df, batches["some failed"].df], [batches["all ok"].df, local.df]):
        df = pd.concat(parts, ignore_index=True)
        # A local record has no host: pandas fills NaN there, so only dtypes are held.
        assert_schema(df, values=False)
        assert_schema(Batch.from_frame(df).df, values=False)
