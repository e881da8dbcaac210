"""DaskPool on a real ``distributed.LocalCluster`` (worker processes, not threads).

One cluster serves the whole module (starting one costs seconds).  Its worker
processes are children of this process and live across tests, so this module
replaces the leak check: after each test no handler process may be left anywhere
in the tree and every child of this process must be a Dask worker process; after
the module, nothing may be left at all (see ``cluster``).
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from fnrun_nb import HandlerStartError, Pool  # noqa: E402
from fnrun_nb._watchdog import WATCHDOG_NAME  # noqa: E402
from fnrun_nb.dask import DaskPool  # noqa: E402
from fnrun_nb.settings import DEFAULTS, PoolSettings  # noqa: E402

from _procs import descendants as _descendants  # noqa: E402
from _runner_check import assert_is_runner  # noqa: E402
from _schema import assert_schema  # noqa: E402
from _procs import open_fds as _fds  # noqa: E402
from _procs import wait_until as _wait_until  # noqa: E402

PROBE = str(Path(__file__).resolve().parent / "handlers" / "dask_probe.py")

pytestmark = pytest.mark.timeout(90)




def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _handlers() -> list[psutil.Process]:
    """Handler processes: the children of the Dask worker processes (which start no
    other processes but a pool's watchdog), zombies included."""
    me = os.getpid()
    out = []
    for p in _descendants():
        try:
            if p.ppid() != me and WATCHDOG_NAME not in _cmdline(p):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _dask_worker_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children() if "spawn_main" in _cmdline(p)}






@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two worker processes; a chunk may kill its worker once and be retried, a second
    death makes it ``worker_lost`` (allowed-failures 1 keeps that test short)."""
    # distributed's offload thread is process-global and lives for ever once started;
    # start it now so that it is part of the baseline.
    from distributed.utils import _offload_executor

    _offload_executor.submit(int).result()
    threads_before = set(threading.enumerate())
    fds_before = _fds()
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
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


@pytest.fixture
def client(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


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


@pytest.fixture
def dpool(client: distributed.Client) -> Iterator[DaskPool]:
    with DaskPool(client, PROBE, workers=2, timeout=5.0) as pool:
        yield pool


def _local_columns(df: pd.DataFrame) -> pd.Series:
    return df.drop(columns=["host", "dask_worker"]).dtypes


def test_schema_equals_a_local_batch_plus_host_and_dask_worker(dpool: DaskPool) -> None:
    inputs = [f"in-{i}".encode() for i in range(24)]
    with Pool(PROBE, workers=2) as local:
        expected = local.map(inputs, progress=False).df
    batch = dpool.map(inputs, chunk_size=4, progress=False)
    df = batch.df
    assert list(df.columns) == [*expected.columns, "host", "dask_worker"]
    pd.testing.assert_series_equal(_local_columns(df), expected.dtypes)
    assert df["data"].tolist() == inputs
    assert (df["outcome"] == "ok").all()
    # Small chunks spread over both Dask workers; the slot key is (dask_worker, worker).
    assert df["dask_worker"].nunique() == 2
    assert df["host"].notna().all()
    assert df.groupby(["dask_worker", "worker"]).ngroups <= 2 * 2
    assert len(batch) == len(inputs)


def test_every_row_present_once_in_submission_order(dpool: DaskPool) -> None:
    inputs = [f"x{i}" for i in range(30)]
    df = dpool.map(inputs, repeat=2, chunk_size=7, progress=False).df
    assert len(df) == 60
    assert df["input_index"].tolist() == list(range(30)) * 2
    assert df["repeat"].tolist() == [0] * 30 + [1] * 30
    assert df["data"].tolist() == [s.encode() for s in inputs] * 2
    assert dpool.last_batch is not None and dpool.last_batch.df is df


def test_per_call_env_travels_with_each_call(dpool: DaskPool) -> None:
    inputs = [("a", {"K": "1"}), "b", ("c", {"K": "3", "COMMON": "mine"})]
    df = dpool.map(inputs, env={"COMMON": "all"}, chunk_size=1, progress=False).df
    assert df["env_in"].tolist() == [
        {"COMMON": "all", "K": "1"},
        {"COMMON": "all"},
        {"COMMON": "mine", "K": "3"},
    ]
    envs = [{k: v for k, v in e.items() if k != "pid"} for e in df["env"]]
    assert envs == df["env_in"].tolist()


def test_failures_are_rows_and_the_batch_goes_on(client: distributed.Client) -> None:
    with DaskPool(client, PROBE, workers=2, timeout=1.0) as pool:
        inputs = ["ok-1", "crash", "fail", "sleep:3000", "ok-2"]
        df = pool.map(inputs, chunk_size=2, progress=False).df
    assert df["outcome"].tolist() == ["ok", "crashed", "ok", "timeout", "ok"]
    assert df["status"].tolist()[2] == 500
    assert df["exit_code"].iloc[1] == 7
    assert pd.isna(df["status"].iloc[1]) and pd.isna(df["status"].iloc[3])
    assert df.loc[[0, 4], "data"].tolist() == [b"ok-1", b"ok-2"]


def test_worker_killed_mid_batch_reruns_its_chunks_elsewhere(
    dpool: DaskPool, tmp_path: Path
) -> None:
    marker = tmp_path / "blocked"
    inputs = [f"v{i}" for i in range(20)]
    inputs[5] = ("block-once", {"MARKER": str(marker)})  # type: ignore[call-overload]
    killed: list[int] = []

    def kill_the_blocked_worker() -> None:
        if _wait_until(lambda: marker.exists() and marker.read_text() != "", 30):
            pid = int(marker.read_text())
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    address_of = {pid: addr for addr, pid in dpool.client.run(os.getpid).items()}
    killer = threading.Thread(target=kill_the_blocked_worker)
    killer.start()
    try:
        df = dpool.map(inputs, chunk_size=4, progress=False).df
    finally:
        killer.join()
    assert killed, "the blocking call never started"
    assert len(df) == 20
    assert df["input_index"].tolist() == list(range(20))
    assert (df["outcome"] == "ok").all(), df[["outcome", "error"]]
    assert df["data"].iloc[5] == b"block-once"
    # The blocked call's chunk was re-run on another worker, and recorded only there.
    assert df["dask_worker"].iloc[5] != address_of[killed[0]]
    # The dead worker's handlers died with it (PR_SET_PDEATHSIG), and the nanny's
    # replacement worker got a pool of its own from the plugin.
    assert killed[0] not in _dask_worker_pids()
    assert _wait_until(lambda: len(_dask_worker_pids()) == 2, 30)
    after = dpool.map(["again"] * 8, chunk_size=1, progress=False).df
    assert (after["outcome"] == "ok").all()


def test_a_chunk_that_keeps_killing_workers_becomes_worker_lost_rows(
    dpool: DaskPool,
) -> None:
    inputs = ["a", "b", "c", "kill-host", "d", "e"]
    df = dpool.map(inputs, chunk_size=3, progress=False).df
    assert df["input_index"].tolist() == list(range(6))
    # The second chunk killed a worker, was retried, killed another: policy says record.
    assert df["outcome"].iloc[3:].tolist() == ["worker_lost"] * 3
    assert df["error"].iloc[3:].str.contains("worker").all()
    assert pd.isna(df["status"].iloc[3:]).all()
    # Rows of the first chunk are ok unless it shared a dying worker (also recorded).
    assert set(df["outcome"].iloc[:3]) <= {"ok", "worker_lost"}
    assert _wait_until(lambda: len(_dask_worker_pids()) == 2, 30)


def test_close_reaps_every_handler_and_unregisters(client: distributed.Client) -> None:
    pool = DaskPool(client, PROBE, workers=3)
    assert _wait_until(lambda: len(_handlers()) == 2 * 3)
    assert pool.plugin_name in client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.worker_plugins)
    )
    pool.close()
    assert not _handlers()  # close() returns after every handler is reaped
    assert pool.plugin_name not in client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.worker_plugins)
    )
    pool.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        pool.map(["x"])


def test_closing_the_client_closes_the_pools(cluster: distributed.LocalCluster) -> None:
    client = distributed.Client(cluster, set_as_default=False)
    pool = DaskPool(client, PROBE, workers=2)
    assert _wait_until(lambda: len(_handlers()) == 4)
    client.close()  # without pool.close(): the scheduler-side watch tears the pools down
    assert _wait_until(lambda: not _handlers())
    pool.close()


def test_a_closing_worker_closes_its_pool(dpool: DaskPool, client: distributed.Client) -> None:
    before = {p.pid for p in _handlers()}
    victim = dpool.dask_workers()[0]
    victim_pid = client.run(os.getpid, workers=[victim])[victim]
    # The victim's live probe handlers (not a zombie or a process mid-spawn, whose
    # command line is not yet the handler's).
    on_victim = {
        p.pid for p in _handlers() if p.ppid() == victim_pid and "dask_probe" in _cmdline(p)
    }
    assert len(on_victim) == 2, [(p.pid, p.ppid(), _cmdline(p)) for p in _handlers()]
    client.restart_workers([victim])  # the worker closes (plugin teardown), a new one starts
    assert _wait_until(lambda: not on_victim & {p.pid for p in _handlers()})
    assert _wait_until(lambda: len(_handlers()) == 4)  # the new worker has a pool again
    assert on_victim <= before
    df = dpool.map(["after"] * 4, chunk_size=1, progress=False).df
    assert (df["outcome"] == "ok").all()


def test_bad_arguments_raise_before_any_call(dpool: DaskPool) -> None:
    with pytest.raises(ValueError, match="repeat"):
        dpool.map(["a"], repeat=0)
    with pytest.raises(TypeError, match="input 1"):
        dpool.map(["a", 3])
    with pytest.raises(TypeError, match="env value"):
        dpool.map([("a", {"K": 1})])
    with pytest.raises(ValueError, match="chunk_size"):
        dpool.map(["a"], chunk_size=0)
    with pytest.raises(ValueError, match="workers"):
        DaskPool(dpool.client, PROBE, workers=0)


def test_a_handler_that_cannot_start_raises_and_registers_nothing(
    client: distributed.Client,
) -> None:
    with pytest.raises(HandlerStartError):
        DaskPool(client, "/nonexistent/handler", workers=1)
    plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    assert not [p for p in plugins if p.startswith("fnrun-nb-")]


def test_dask_pool_is_a_runner(dpool: DaskPool) -> None:
    assert_is_runner(dpool, PoolSettings(workers=2, timeout=5.0))
    # Each Dask worker's Pool is made with those settings, under the same names.
    assert {k: dpool.options[k] for k in PoolSettings.names()} == dpool.settings.as_dict()
    params = inspect.signature(DaskPool).parameters
    for name, value in DEFAULTS.as_dict().items():
        assert params[name].default == value, name


def test_rate_is_shared_over_the_workers(dpool: DaskPool) -> None:
    df = dpool.map([f"r{i}" for i in range(20)], rate=40.0, progress=False).df
    assert df["input_index"].tolist() == list(range(20))
    assert df["scheduled"].notna().all()
    assert (df["outcome"] == "ok").all()
    # 20 calls at 40/s in total, 20/s on each of two workers: about half a second.
    per_worker = df.groupby("dask_worker")["scheduled"].agg(lambda s: s.max() - s.min())
    assert (per_worker >= pd.Timedelta(milliseconds=400)).all()
    assert np.isclose(len(df) / 2, df.groupby("dask_worker").size()).all()


def test_fnrun_magic_with_dask_runs_the_cell_on_the_cluster(
    cluster: distributed.LocalCluster,
) -> None:
    from IPython.core.error import UsageError

    from fnrun_nb.magics import FnrunMagics

    magics = FnrunMagics(None)
    try:
        line = f"{PROBE} --dask {cluster.scheduler_address} -w 1 --lines -e K=v"
        batch = magics.fnrun_cell(line, "one\ntwo\nthree\n")
        df = batch.df
        assert df["data"].tolist() == [b"one", b"two", b"three"]
        assert df["env_in"].tolist() == [{"K": "v"}] * 3
        assert df["dask_worker"].notna().all()
        # The DaskPool stays for the next cell; one input is a batch of one.
        again = magics.fnrun_cell(f"{PROBE} --dask {cluster.scheduler_address} -w 1", "solo")
        assert again.df["data"].tolist() == [b"solo"]
        assert len(magics.registry.dask) == 1
        with pytest.raises(UsageError, match="--monitor"):
            magics.fnrun_cell(f"{PROBE} --dask {cluster.scheduler_address} --monitor", "x")
        # %fnrun pools lists it, with where it runs and the calls the cells made.
        (row,) = magics.pool_table().rows
        assert (row.handler, row.where, row.calls, row.failures) == (
            PROBE, f"dask {cluster.scheduler_address}", 4, 0
        )
        assert repr(magics.pool_table()).splitlines()[0].split() == [
            "command", "where", "workers", "calls", "failures", "uptime"
        ]
        with pytest.raises(UsageError, match="runs on the Dask cluster"):
            magics.fnrun_line(f"stderr {PROBE}")
        (before,) = magics.registry.dask.values()
        magics.fnrun_line(f"restart {PROBE}")
        (restarted,) = magics.registry.dask.values()
        assert before.pool.closed and not restarted.pool.closed and restarted.calls == 0
        assert magics.fnrun_cell(f"{PROBE} --dask {cluster.scheduler_address} -w 1", "x").df[
            "outcome"].tolist() == ["ok"]
        # %fnrun stop HANDLER ends it like a local pool; its processes go with it.
        magics.fnrun_line(f"stop {PROBE}")
        assert magics.registry.dask == {} and len(magics.pool_table()) == 0
        assert _wait_until(lambda: not _handlers())
        magics.fnrun_cell(f"{PROBE} --dask {cluster.scheduler_address} -w 1", "again")
        # The profiling options reach the Dask batch: the same columns as a local one.
        line = f"{PROBE} --dask {cluster.scheduler_address} -w 1 --resources --handler-timing"
        profiled = magics.fnrun_cell(line, "p").df
        assert {"cpu_ms", "rss_mib", "peak_rss_mib", "handler_ms", "transport_ms"} <= set(
            profiled.columns
        )
        assert profiled["rss_mib"].gt(0).all() and profiled["handler_ms"].notna().all()
        assert len(magics.registry.dask) == 1  # not a pool setting: the same DaskPool
    finally:
        assert magics.close_all() == 1
    assert _wait_until(lambda: not _handlers())


def test_cli_dask_runs_the_batch_on_the_cluster(
    cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    import subprocess
    import sys

    out = tmp_path / "run.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "fnrun_nb", "run", PROBE, "--dask", cluster.scheduler_address,
         "-w", "1", "-e", "K=v", "--out", str(out), "--no-progress"],
        input=b"one\ntwo\ncrash\n", capture_output=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr.decode()  # one call crashed: exit 1
    assert "3 calls" in proc.stdout.decode()
    df = pd.read_parquet(out)
    assert df["outcome"].tolist() == ["ok", "ok", "crashed"]
    assert df["dask_worker"].notna().all()
    assert df["host"].notna().iloc[:2].all()


def test_cli_dask_without_a_scheduler_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "fnrun_nb", "run", PROBE, "--dask", "tcp://127.0.0.1:9",
         "--no-progress"],
        input=b"x\n", capture_output=True, timeout=60,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
    )
    assert proc.returncode == 2
    assert "--dask tcp://127.0.0.1:9" in proc.stderr.decode()


def test_ctrl_c_cancels_the_rest_and_keeps_the_partial_batch(dpool: DaskPool) -> None:
    main = threading.get_ident()
    inputs = ["sleep:300"] * 16  # 8 chunks of 2; each worker runs one chunk at a time
    timer = threading.Timer(0.8, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            dpool.map(inputs, chunk_size=2, progress=False)
    finally:
        timer.cancel()
        timer.join()
    batch = dpool.last_batch
    assert batch is not None and batch.interrupted
    df = batch.df
    assert df["input_index"].tolist() == list(range(16))
    outcomes = set(df["outcome"])
    assert outcomes <= {"ok", "cancelled"} and "cancelled" in outcomes
    cancelled = df[df["outcome"] == "cancelled"]
    assert cancelled["error"].str.contains("interrupted").all()
    # The pool stays usable.
    assert (dpool.map(["after"], progress=False).df["outcome"] == "ok").all()


def test_a_chunk_on_a_worker_without_a_pool_becomes_start_failed_rows(
    client: distributed.Client,
) -> None:
    # A worker that joined later and could not start the handler has no pool: its
    # chunks must come back as rows saying so, not abort the batch and lose every row.
    with DaskPool(client, PROBE, workers=1, timeout=5.0) as dpool:
        client.unregister_worker_plugin(dpool.plugin_name)  # every worker loses its pool
        batch = dpool.map([f"x{i}" for i in range(12)], chunk_size=4, progress=False)
        df = batch.df
        assert len(df) == 12 and df["input_index"].tolist() == list(range(12))
        assert (df["outcome"] == "start_failed").all()
        assert df["error"].str.startswith("HandlerStartError: no fnrun_nb pool on Dask worker").all()
        assert df["dask_worker"].isin(dpool.dask_workers()).all()
        assert dpool.last_batch is batch


def test_map_takes_pool_maps_monitor_argument(
    dpool: DaskPool, capfd: pytest.CaptureFixture[str]
) -> None:
    # Same arguments as Pool.map: monitor=True shows the progress at once (the worker
    # processes themselves live on the cluster).
    batch = dpool.map(["m1", "m2"], monitor=True)
    assert (batch.df["outcome"] == "ok").all()
    assert "fnrun on Dask" in capfd.readouterr().err
    dpool.map(["m3"], monitor=False)
    assert "fnrun on Dask" not in capfd.readouterr().err


def test_resources_and_handler_timing_give_a_local_batchs_columns(dpool: DaskPool) -> None:
    inputs = [f"r{i}".encode() for i in range(12)]
    flags = {"resources": True, "handler_timing": True}
    with Pool(PROBE, workers=2) as local:
        expected = local.map(inputs, progress=False, **flags).df
    batch = dpool.map(inputs, chunk_size=4, progress=False, **flags)
    df = batch.df
    assert list(df.columns) == [*expected.columns, "host", "dask_worker"]
    pd.testing.assert_series_equal(_local_columns(df), expected.dtypes)
    assert_schema(df)
    assert (df["outcome"] == "ok").all()
    for name in ("handler_ms", "transport_ms", "cpu_ms", "rss_mib", "peak_rss_mib"):
        assert df[name].notna().all(), name
    assert (df["rss_mib"] > 0).all() and (df["handler_ms"] > 0).all()
    assert not any("FNRUN_NB_TIMING" in e for e in df["env_in"])
    assert not any("FNRUN_NB_HANDLER_NS" in e or "FNRUN_NB_TIMING" in e for e in df["env"])
    assert batch.config["resources"] is True and batch.config["handler_timing"] is True
    # Off (this DaskPool's default): absent, as locally.
    plain = dpool.map(inputs[:2], progress=False).df
    assert "cpu_ms" not in plain.columns and "handler_ms" not in plain.columns


def test_rows_without_a_result_carry_the_optional_columns(client: distributed.Client) -> None:
    with DaskPool(client, PROBE, workers=1, timeout=5.0, resources=True,
                  handler_timing=True) as dpool:
        client.unregister_worker_plugin(dpool.plugin_name)  # every worker loses its pool
        df = dpool.map([f"x{i}" for i in range(8)], chunk_size=4, progress=False).df
    assert (df["outcome"] == "start_failed").all()
    assert_schema(df)
    for name in ("handler_ms", "transport_ms", "cpu_ms", "rss_mib", "peak_rss_mib"):
        assert df[name].isna().all(), name


def test_a_dask_batch_keeps_its_inputs_and_saves_them(dpool: DaskPool, tmp_path: Path) -> None:
    inputs = [b"in-0", "in-1", (b"in-2", {"K": "v"})]
    batch = dpool.map(inputs, repeat=2, chunk_size=2, progress=False)
    assert batch.inputs is not None
    assert batch.inputs.tolist() == [b"in-0", b"in-1", b"in-2"]
    assert batch.inputs[0] is inputs[0]  # bytes kept by reference
    assert batch.config["process_env"] is None
    back = type(batch).load(batch.save(tmp_path / "dask.parquet"))
    assert back.inputs is not None and back.inputs.tolist() == batch.inputs.tolist()


def test_profiles_travel_back_from_dask_workers_in_the_profile_column(
    client: distributed.Client,
) -> None:
    hot = str(Path(__file__).resolve().parent / "handlers" / "hot_parts.py")
    with DaskPool(client, hot, workers=1, timeout=10.0) as dp:
        batch = dp.map([b"slow", b"fast", b"crash", b"slow"], chunk_size=2, profile=True,
                       progress=False)
    df = batch.df
    assert df["outcome"].tolist() == ["ok", "ok", "crashed", "ok"]
    assert_schema(df)
    assert not any("FNRUN_NB_PROFILE" in k for e in df["env_in"] for k in e)
    assert not any("FNRUN_NB_PROFILE_DATA" in e for e in df["env"])
    profile = batch.profile
    assert profile is not None and (profile.calls, profile.failed) == (3, 1)
    assert profile.top()["function"].iloc[0] == "slow_part"
    assert sorted(profile.by_call or {}) == [0, 1, 3]


def test_lines_and_script_pools_run_on_the_cluster(client: distributed.Client) -> None:
    shout = str(Path(__file__).resolve().parent.parent / "notebooks" / "handlers" / "shout.py")
    inputs = [f"call {i}".encode() for i in range(10)]
    for protocol in ("lines", "script"):
        with DaskPool(client, [sys.executable, shout, protocol], workers=1, timeout=20.0,
                      protocol=protocol) as dpool:
            assert dpool.options["protocol"] == protocol
            batch = dpool.map(inputs, chunk_size=3, progress=False)
            df = batch.df
            assert_schema(df)
            assert df["outcome"].astype(str).eq("ok").all(), df["error"].dropna().tolist()
            assert df["data"].tolist() == [i.upper() for i in inputs]
            assert batch.config["protocol"] == protocol
            if protocol == "script":
                assert df["cold"].all() and df["exit_code"].eq(0).all()
                assert df["env"].tolist() == [{}] * 10
            else:
                with pytest.raises(ValueError, match="per-call env"):
                    dpool.map(inputs, env={"A": "1"}, progress=False)
    with pytest.raises(ValueError, match="handler timing"):
        DaskPool(client, [sys.executable, shout, "lines"], protocol="lines", handler_timing=True)
