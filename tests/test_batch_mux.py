"""The multiplexed batch path (``batch._mux``): one I/O thread drives every call of a
batch on command workers.  It must give the rows the thread path gives, and keep every
guarantee of ``Pool.map``: failures are rows, broken workers are replaced, deadlines,
recycling, a close mid-batch and Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from fnrun_nb import Pool
from fnrun_nb.batch import _mux, runner

from _procs import interrupt_when_ready
from conftest import TEST_HANDLERS

FAULTY = [sys.executable, str(TEST_HANDLERS / "faulty.py")]
SLEEPY = str(TEST_HANDLERS / "sleepy.py")
sys.path.insert(0, str(TEST_HANDLERS))
from faulty import FAULTS  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Which path each batch took, in order: ``"mux"`` or ``"threads"``.  The host is
    made to look like one CPU, so that a batch with two calls in flight is
    multiplexed on any machine."""
    monkeypatch.setattr(_mux, "_cpus", lambda: 1)
    taken: list[str] = []
    real_serve = runner.serve_mux
    real_rows = runner._Run._serve_rows

    def serve(run: Any, pool: Any, width: int) -> None:
        taken.append("mux")
        real_serve(run, pool, width)

    def rows(self: Any) -> None:
        if not getattr(self, "counted", False):  # once per batch, not per runner thread
            self.counted = True
            taken.append("threads")
        real_rows(self)

    monkeypatch.setattr(runner, "serve_mux", serve)
    monkeypatch.setattr(runner._Run, "_serve_rows", rows)
    yield taken


def _thread_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "io_threads", lambda pool, plan: [])


FAULT_KINDS = ["exit", "sigkill", "half_frame", "close_stdout", "stdout_noise", "invalid_utf8_env"]


def _fault_inputs() -> list[bytes]:
    inputs: list[bytes] = []
    for i, kind in enumerate(FAULT_KINDS):
        inputs += [FAULTS[kind].input, b"after %d" % i, b"more %d" % i]
    return inputs


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The columns that do not depend on timing or on which worker ran a call."""
    keep = ["input_index", "repeat", "status", "outcome", "data", "env", "env_in",
            "bytes_in", "bytes_out", "exit_code"]
    out = df[keep].copy()
    out["error_kind"] = df["error"].str.split(":").str[0]
    return out


def test_same_rows_and_columns_as_the_thread_path(
    paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _fault_inputs()
    with Pool(FAULTY, workers=2, timeout=10, handler_timing=True) as pool:
        fast = pool.map(inputs, env={"K": "v"}, progress=False)
        with monkeypatch.context() as m:
            _thread_path(m)
            slow = pool.map(inputs, env={"K": "v"}, progress=False)
        assert pool.invoke(b"usable").data == b"usable"
    assert paths == ["mux", "threads"]
    a, b = fast.df, slow.df
    assert list(a.columns) == list(b.columns) and (a.dtypes == b.dtypes).all()
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b))
    faults = a.iloc[::3]
    assert faults["outcome"].tolist() == [FAULTS[k].outcome for k in FAULT_KINDS]
    ok = a[a["outcome"] == "ok"]
    assert len(ok) == 2 * len(FAULT_KINDS)
    assert ok["handler_ms"].isna().all()  # the faulty handler reports no timing
    assert (ok["wait_ms"] >= 0).all() and (ok["service_ms"] > 0).all()
    assert ok["pid"].notna().all() and ok["call_on_worker"].notna().all()
    assert (a["latency_ms"] >= a["service_ms"].fillna(0)).all()


def test_crashes_mid_batch_are_rows_and_workers_are_replaced(paths: list[str]) -> None:
    inputs = [b"x%d" % i for i in range(40)]
    inputs[7] = FAULTS["exit"].input
    inputs[21] = FAULTS["sigkill"].input
    inputs[30] = FAULTS["half_frame"].input
    with Pool(FAULTY, workers=3, timeout=10) as pool:
        batch = pool.map(inputs, progress=False)
        replacements = pool.snapshot().replacements
    assert paths == ["mux"]
    df = batch.df
    assert len(df) == 40
    bad = {7: "crashed", 21: "crashed", 30: "crashed"}
    for k, outcome in enumerate(df["outcome"]):
        assert outcome == bad.get(k, "ok"), (k, outcome)
    good = df[df["outcome"] == "ok"]
    assert good["data"].tolist() == [inputs[k] for k in good.index]
    assert df.loc[[7, 21, 30], "exit_code"].tolist() == [3, -9, 0]
    assert replacements >= 3


def test_deadline_is_a_timeout_row_and_the_rest_run(paths: list[str]) -> None:
    with Pool(SLEEPY, workers=2, timeout=0.5) as pool:
        batch = pool.map(["0", "5", "0", "0", "0", "0"], progress=False)
    assert paths == ["mux"]
    assert batch.df["outcome"].tolist() == ["ok", "timeout", "ok", "ok", "ok", "ok"]


def test_idle_deaths_are_retried_on_fresh_workers(paths: list[str]) -> None:
    """Each process answers one call and exits: every later call finds its worker dead
    (not delivered), and runs on a replacement instead of becoming a failed row."""
    with Pool(
        FAULTY, workers=2, timeout=10, max_wait=30,
        process_env={**os.environ, "FAULTY_EXIT_AFTER_ANSWER": "1"},
    ) as pool:
        batch = pool.map([b"c%d" % i for i in range(12)], progress=False)
    assert paths == ["mux"]
    df = batch.df
    assert (df["outcome"] == "ok").all(), df["error"].dropna().tolist()
    assert df["data"].tolist() == [b"c%d" % i for i in range(12)]


def test_max_calls_per_worker_recycles(paths: list[str]) -> None:
    with Pool(FAULTY, workers=2, timeout=10, max_calls_per_worker=3) as pool:
        batch = pool.map([b"r%d" % i for i in range(20)], progress=False)
    assert paths == ["mux"]
    df = batch.df
    assert (df["outcome"] == "ok").all()
    assert df["call_on_worker"].max() <= 3
    assert df["generation"].max() >= 3


def test_rate_resources_rss_limit_one_worker_and_user_invokers_keep_the_threads(
    paths: list[str],
) -> None:
    with Pool(FAULTY, workers=2, timeout=10) as pool:
        pool.map([b"a", b"b"], rate=1000, progress=False)
        pool.map([b"a", b"b"], resources=True, progress=False)
        pool.map([b"a", b"b"], concurrency=1, progress=False)
        pool.map([b"a", b"b", b"c"], concurrency=3, progress=False)
        pool.map([b"a"], progress=False)
        pool.map([b"a", b"b"], progress=False)
    assert paths == ["threads"] * 5 + ["mux"]
    with Pool(FAULTY, workers=2, timeout=10, max_rss_mib=4096) as pool:
        pool.map([b"a", b"b"], progress=False)
    assert paths[-1] == "threads"


def test_close_during_a_fast_batch_cancels_the_rest(paths: list[str]) -> None:
    pool = Pool(SLEEPY, workers=2, timeout=10)
    pool.invoke(b"0")
    out: dict[str, Any] = {}

    def run() -> None:
        out["batch"] = pool.map(["0.3"] * 20, progress=False)

    t = threading.Thread(target=run)
    t.start()
    while pool.active_batch is None or pool.active_batch.progress().done < 2:
        time.sleep(0.01)
    pool.close(grace=0.1)
    t.join(10)
    assert not t.is_alive()
    assert paths == ["mux"]
    df = out["batch"].df
    assert len(df) == 20 and (df["outcome"].iloc[:2] == "ok").all()
    assert "cancelled" in set(df["outcome"])
    assert set(df["outcome"]) <= {"ok", "cancelled"}
    assert df[df["outcome"] == "cancelled"]["error"].notna().all()


CHILD = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    import psutil
    from fnrun_nb import Pool
    from fnrun_nb.batch import _mux, runner

    _mux._cpus = lambda: 1  # multiplexed on any machine
    # and after the interrupted batch too, however slow a busy machine made its calls
    _mux.SLOW_SERVICE = 60.0
    taken = []
    real = runner.serve_mux
    def serve(run, pool, width):
        taken.append("mux")
        real(run, pool, width)
    runner.serve_mux = serve

    pool = Pool(sys.argv[1], workers=3, timeout=60)
    pool.invoke(b"0")

    def announce():
        while True:
            b = pool.active_batch
            if b is not None and b.progress().done >= 6:
                time.sleep(0.3)  # the three long calls are in flight now
                print("READY", flush=True)
                return
            time.sleep(0.01)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        pool.map(["0"] * 6 + ["30"] * 3 + ["0"] * 9, progress=False)
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
    report["t_back"] = time.time()
    b = pool.last_batch
    df = b.df
    report["taken"] = taken
    report["interrupted"] = b.interrupted
    report["active"] = pool.active_batch is not None
    report["outcomes"] = df["outcome"].astype(str).tolist()
    report["killed_pids"] = df["pid"].iloc[6:9].astype("float").tolist()
    report["errors"] = df["error"].iloc[6:].tolist()
    report["after"] = pool.map([b"1", b"2", b"3"], progress=False).df["data"].tolist()
    report["after"] = [d.decode() for d in report["after"]]
    report["generations"] = sorted(w.generation for w in pool.snapshot().workers)
    pool.close()
    report["children"] = len(psutil.Process().children(recursive=True))
    print(json.dumps(report), flush=True)
    """
)


def test_ctrl_c_during_a_fast_batch() -> None:
    report, err, t_sent = interrupt_when_ready(CHILD, SLEEPY, timeout=60)
    assert report["raised"] == "KeyboardInterrupt", err
    assert report["taken"] == ["mux", "mux"]
    assert report["interrupted"] is True and report["active"] is False
    assert report["t_back"] - t_sent < 10  # the 30 s calls were killed, not awaited
    assert report["outcomes"] == ["ok"] * 6 + ["cancelled"] * 12
    assert all(p == p for p in report["killed_pids"]), report
    assert all("interrupted" in e for e in report["errors"])
    assert report["after"] == ["1", "2", "3"]
    assert report["generations"] == [2, 2, 2]
    assert report["children"] == 0


def test_multiplexable_needs_command_workers() -> None:
    from fnrun_nb.batch.inputs import plan_batch
    from fnrun_nb.pool import InvokerPool, InvokerPoolConfig

    class Echo:
        def invoke(self, input: Any, *, env: Any = None, timeout: Any = None) -> Any:
            from fnrun_nb.values import Result

            return Result(200, bytes(input.data), dict(env or {}))

        def close(self) -> None:
            pass

    class Factory:
        def new_invoker(self) -> Echo:
            return Echo()

    pool = InvokerPool(InvokerPoolConfig(2, Factory(), 1.0, 5.0))
    try:
        plan = plan_batch([b"a", b"b"], env=None, repeat=1, concurrency=None, rate=None,
                          keep_data=True, progress=False, workers=2, resources=False,
                          handler_timing=False)
        assert not _mux.multiplexable(pool, plan)
        assert _mux.io_threads(pool, plan) == []
        one = plan_batch([b"a", b"b"], env=None, repeat=1, concurrency=1, rate=None,
                         keep_data=True, progress=False, workers=2)
        assert _mux.io_threads(pool, one) == []  # nor co-located: not a command
    finally:
        pool.close()


def test_io_threads_only_with_more_calls_in_flight_than_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fnrun_nb.batch.inputs import plan_batch

    def plan(rows: int, concurrency: int | None = None) -> Any:
        return plan_batch([b"x"] * rows, env=None, repeat=1, concurrency=concurrency,
                          rate=None, keep_data=True, progress=False, workers=4)

    with Pool(FAULTY, workers=4, timeout=10) as pool:
        target = pool.invoker_pool
        monkeypatch.setattr(_mux, "_cpus", lambda: 2)
        assert _mux.io_threads(target, plan(100)) == [4]
        assert _mux.io_threads(target, plan(100, concurrency=3)) == [3]
        assert _mux.io_threads(target, plan(100, concurrency=2)) == []  # a thread per CPU
        assert _mux.io_threads(target, plan(2)) == []
        monkeypatch.setattr(_mux, "_cpus", lambda: 8)
        assert _mux.io_threads(target, plan(100)) == []


def test_a_handler_that_cannot_start_fails_every_row_fast(paths: list[str]) -> None:
    with Pool([sys.executable, "-c", "import sys; sys.exit(4)"], workers=4, timeout=5,
              max_wait=2) as pool:
        t0 = time.perf_counter()
        batch = pool.map([b"a"] * 200, progress=False)
        took = time.perf_counter() - t0
    assert paths == ["mux"]
    df = batch.df
    assert (df["outcome"] == "start_failed").all()
    assert df["error"].str.contains("HandlerStartError").all()
    assert took < 5, took  # not one 50 ms poll interval per row (10 s)


# --- one call in flight: the I/O thread and its worker share a CPU ----------------------

AFFINITY = str(TEST_HANDLERS / "affinity.py")
needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="co-location needs a host with two CPUs or more",
)


def _cpus_seen(batch: Any) -> list[list[int]]:
    ok = batch.df[batch.df["outcome"] == "ok"]
    return [json.loads(d) for d in ok["data"]]


@needs_two_cpus
def test_one_call_in_flight_runs_on_one_cpu_and_gives_the_cpus_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No call counts as slow here (a busy machine can make an echo take 300 us, which
    # would rightly release the worker): this test is about the pins themselves.
    monkeypatch.setattr(_mux, "SLOW_SERVICE", 60.0)
    host = sorted(os.sched_getaffinity(0))
    inputs = [b"a"] * 6 + [b"crash"] + [b"b"] * 8
    with Pool(AFFINITY, workers=1, timeout=10) as pool:
        batch = pool.map(inputs, progress=False)
        pid = pool.snapshot().workers[0].pid
        assert pid is not None
        after = sorted(os.sched_getaffinity(pid))
        single = json.loads(pool.invoke(b"x").data)
    df = batch.df
    assert df["outcome"].tolist() == ["ok"] * 6 + ["crashed"] + ["ok"] * 8
    assert df["generation"].tolist() == [1] * 7 + [2] * 8  # replaced mid-batch
    # A worker's first call runs before it is pinned (see _Colocation.pin); every
    # later call, on the first worker and on its replacement, saw one CPU, the same.
    ok = df[df["outcome"] == "ok"]
    assert ok["call_on_worker"].tolist() == [1, 2, 3, 4, 5, 6] + [1, 2, 3, 4, 5, 6, 7, 8]
    later = ok[ok["call_on_worker"] > 1]
    seen = {tuple(json.loads(d)) for d in later["data"]}
    assert len(seen) == 1 and len(next(iter(seen))) == 1, seen
    assert next(iter(seen))[0] in host
    # Afterwards the worker, and this thread, have the host's CPUs again.
    assert after == host and single == host
    assert sorted(os.sched_getaffinity(0)) == host


@needs_two_cpus
def test_a_slow_call_gives_the_worker_its_cpus_back_until_calls_are_fast_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pinned only while calls are fast: a slow call (200 ms, over SLOW_SERVICE) runs
    pinned, since its speed is known only after it, then releases the worker; the
    next fast call pins it again from the call after.  The threshold is raised to
    50 ms here, so that a busy machine cannot make an echo look slow."""
    monkeypatch.setattr(_mux, "SLOW_SERVICE", 0.05)
    host = sorted(os.sched_getaffinity(0))
    inputs = [b"a", b"a", b"a", b"slow", b"a", b"a", b"slow", b"slow", b"a"]
    with Pool(AFFINITY, workers=1, timeout=10) as pool:
        batch = pool.map(inputs, progress=False)
    seen = [json.loads(d) for d in batch.df["data"]]
    pinned = [len(cpus) == 1 for cpus in seen]
    # 1st call: before any pin; 5th: released by the slow 4th; 8th: by the slow 7th;
    # 9th: the 8th was slow, so not pinned yet.
    assert pinned == [False, True, True, True, False, True, True, False, False], seen
    assert all(cpus == host for cpus, p in zip(seen, pinned) if not p)


@needs_two_cpus
def test_a_handler_that_pinned_itself_keeps_its_cpu() -> None:
    mine = max(os.sched_getaffinity(0))
    with Pool(AFFINITY, workers=1, timeout=10,
              process_env={**os.environ, "AFFINITY_PIN": str(mine)}) as pool:
        batch = pool.map([b"a"] * 5, progress=False)
        pid = pool.snapshot().workers[0].pid
        assert pid is not None and os.sched_getaffinity(pid) == {mine}
    assert _cpus_seen(batch) == [[mine]] * 5  # and it did not move during the batch


@needs_two_cpus
def test_one_call_in_flight_takes_the_multiplexed_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from fnrun_nb.batch.inputs import plan_batch

    def plan(rows: int, concurrency: int | None = None) -> Any:
        return plan_batch([b"x"] * rows, env=None, repeat=1, concurrency=concurrency,
                          rate=None, keep_data=True, progress=False, workers=2)

    with Pool(FAULTY, workers=2, timeout=10) as pool:
        target = pool.invoker_pool
        assert _mux.io_threads(target, plan(100, concurrency=1)) == [1]
        assert _mux.io_threads(target, plan(1)) == []  # one row: nothing to gain
        monkeypatch.setattr(_mux._Colocation, "possible", False)
        assert _mux.io_threads(target, plan(100, concurrency=1)) == []
        monkeypatch.setattr(_mux._Colocation, "possible", True)
        monkeypatch.setattr(_mux, "_cpus", lambda: 1)
        assert _mux.io_threads(target, plan(100, concurrency=1)) == []


def test_colocation_that_cannot_pin_leaves_the_batch_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the thread's CPU cannot be read the batch runs unpinned; a worker that is
    gone before its pin is skipped, and no row fails either way."""
    monkeypatch.setattr(_mux, "_current_cpu", lambda: None)
    assert not _mux._Colocation().start()
    with Pool(FAULTY, workers=1, timeout=10) as pool:
        batch = pool.map([b"a", b"b", b"c"], progress=False)
    assert (batch.df["outcome"] == "ok").all()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    class Gone:
        pid = gone.pid
        alive = False
        calls = 1

    colocation = _mux._Colocation()
    colocation.host, colocation.cpu = {0, 1}, {0}
    colocation.pin(Gone())  # type: ignore[arg-type]
    assert colocation.pinned == []


def test_a_pool_whose_last_batch_was_slow_keeps_a_thread_per_call(
    paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path follows the pool's last batch: slow calls (``SLOW_SERVICE``) keep a
    thread per call for the next batch, fast ones go back to the I/O thread; a batch
    with no ok row changes nothing.  The threshold is raised to 50 ms here, so that a
    busy machine cannot make an echo look slow."""
    monkeypatch.setattr(_mux, "SLOW_SERVICE", 0.05)
    fast = ["0"] * 20
    with Pool(SLEEPY, workers=2, timeout=10) as pool:
        pool.map(fast, progress=False)  # no history yet: multiplexed
        pool.map(["0.15"] * 4, progress=False)  # learns: slow
        pool.map(fast, progress=False)  # a thread per call; learns: fast
        pool.map(fast, progress=False)
        pool.map(["crash"] * 2, progress=False)  # no warm ok row: still fast
        pool.map(fast, progress=False)
    assert paths == ["mux", "mux", "threads", "mux", "mux", "mux"]
    other = Pool(SLEEPY, workers=2, timeout=10)  # the history is per pool
    try:
        other.map(fast, progress=False)
    finally:
        other.close()
    assert paths[-1] == "mux"


def test_median_service_of_a_recorder() -> None:
    from fnrun_nb.batch.inputs import plan_batch
    from fnrun_nb.batch.record import Recorder

    plan = plan_batch([b"x"] * 6, env=None, repeat=1, concurrency=None, rate=None,
                      keep_data=True, progress=False, workers=2)
    with Pool(FAULTY, workers=2, timeout=10) as pool:
        batch = pool.map([b"a", b"b", b"c"], progress=False)
    assert Recorder(plan).median_service() is None
    recorded = batch._recorder.median_service()
    df = batch.df
    warm = df[df["call_on_worker"] > 1]  # a first call includes the process's start
    assert len(warm) >= 1
    assert recorded == pytest.approx(warm["service_ms"].median() / 1e3)
