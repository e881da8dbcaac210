"""Failures are rows, never aborts: one test per outcome a local pool can produce,
``close()`` during a batch, and Ctrl-C as a real SIGINT to the process group."""

from __future__ import annotations

import sys
import textwrap
import threading
import time

import pytest

from fnrun_nb import Pool

from _procs import interrupt_when_ready
from conftest import TEST_HANDLERS

SLEEPY = str(TEST_HANDLERS / "sleepy.py")
sys.path.insert(0, str(TEST_HANDLERS))
from faulty import FAULTS  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def test_each_fault_becomes_a_row_with_its_outcome_and_the_batch_goes_on() -> None:
    kinds = ["exit", "sigkill", "half_frame", "close_stdout", "stdout_noise", "invalid_utf8_env"]
    inputs = []
    for kind in kinds:
        inputs += [FAULTS[kind].input, b"after"]
    with Pool([sys.executable, str(TEST_HANDLERS / "faulty.py")], workers=1, timeout=10) as pool:
        batch = pool.map(inputs, progress=False)
        assert pool.invoke(b"still usable").data == b"still usable"
    df = batch.df
    faults = df.iloc[::2]
    assert faults["outcome"].tolist() == [FAULTS[k].outcome for k in kinds]
    # every call after a failure ran on a fresh process of the same slot
    after = df.iloc[1::2]
    assert (after["outcome"] == "ok").all() and (after["data"] == b"after").all()
    assert after["generation"].tolist() == list(range(2, len(kinds) + 2))
    assert (after["call_on_worker"] == 1).all() and after["cold"].all()
    crashed = faults[faults["outcome"] == "crashed"]
    assert crashed["exit_code"].tolist() == [
        FAULTS[k].exit_code for k in kinds if FAULTS[k].outcome == "crashed"
    ]
    assert faults["status"].isna().all() and faults["data"].isna().all()
    assert faults["error"].notna().all() and faults["pid"].notna().all()
    assert (faults["latency_ms"] >= faults["service_ms"]).all()
    assert len(batch.failed) == len(kinds)
    assert batch.summary().outcomes["protocol_error"] == 3


def test_timeout_is_a_row_and_stderr_tail_is_kept() -> None:
    handler = textwrap.dedent(
        """
        import sys, time
        from fnrun_nb.handler import serve
        def handle(data, ctx):
            print("working on", data.decode(), file=sys.stderr, flush=True)
            time.sleep(float(data))
            return data
        serve(handle)
        """
    )
    with Pool([sys.executable, "-c", handler], workers=1, timeout=0.5) as pool:
        df = pool.map(["5", "0"], progress=False).df
    assert df["outcome"].tolist() == ["timeout", "ok"]
    row = df.iloc[0]
    assert "working on 5" in row["stderr_tail"]
    assert "timeout" in row["error"]
    assert 400 < row["service_ms"] < 5000
    assert df["generation"].tolist() == [1, 2]


def test_a_handler_that_dies_before_its_first_call_is_start_failed() -> None:
    with Pool([sys.executable, "-c", "import sys; sys.exit(4)"], workers=1, timeout=5,
              max_wait=2) as pool:
        batch = pool.map([b"a", b"b"], progress=False)
    df = batch.df
    assert df["outcome"].tolist() == ["start_failed", "start_failed"]
    assert df["status"].isna().all()
    assert df["error"].str.contains("HandlerStartError").all()


def test_no_free_worker_within_max_wait_is_unavailable() -> None:
    # Two calls at once on one worker that answers in 0.5 s, with 0.1 s of patience.
    with Pool(SLEEPY, workers=1, timeout=5, max_wait=0.1) as pool:
        pool.invoke(b"0")
        df = pool.map(["0.5", "0.5"], concurrency=2, progress=False).df
    assert sorted(df["outcome"]) == ["ok", "unavailable"]
    lost = df[df["outcome"] == "unavailable"].iloc[0]
    assert pd_isna(lost["worker"]) and pd_isna(lost["started"])
    assert 90 <= lost["wait_ms"] < 2000 and lost["latency_ms"] == pytest.approx(lost["wait_ms"])
    assert "AvailabilityTimeout" in lost["error"]


def pd_isna(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_close_during_a_batch_cancels_the_rest_and_returns() -> None:
    pool = Pool(SLEEPY, workers=1, timeout=10)
    pool.invoke(b"0")
    out: dict[str, object] = {}

    def run() -> None:
        out["batch"] = pool.map(["0.3"] * 10, progress=False)

    t = threading.Thread(target=run)
    t.start()
    while pool.active_batch is None or pool.active_batch.progress().done < 1:
        time.sleep(0.01)
    pool.close(grace=0.1)
    t.join(10)
    batch = out["batch"]
    df = batch.df  # type: ignore[attr-defined]
    assert df["outcome"].iloc[0] == "ok"
    assert (df["outcome"].iloc[1:] != "ok").all()
    assert "cancelled" in set(df["outcome"])
    assert not batch.interrupted  # type: ignore[attr-defined]
    assert df[df["outcome"] == "cancelled"]["error"].notna().all()


CHILD = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    import psutil
    from fnrun_nb import Pool

    pool = Pool(sys.argv[1], workers=2, timeout=60)
    pool.invoke(b"0")

    def announce():
        while True:
            b = pool.active_batch
            if b is not None and b.progress().done >= 4:
                time.sleep(0.3)  # the two long calls are in flight now
                print("READY", flush=True)
                return
            time.sleep(0.01)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        pool.map(["0"] * 4 + ["30"] * 2 + ["0"] * 6, progress=False)
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
    report["t_back"] = time.time()
    b = pool.last_batch
    df = b.df
    report["interrupted"] = b.interrupted
    report["active"] = pool.active_batch is not None
    report["outcomes"] = df["outcome"].astype(str).tolist()
    report["killed_pids"] = df["pid"].iloc[4:6].astype("float").tolist()
    report["errors"] = df["error"].iloc[4:].tolist()
    report["after"] = pool.invoke(b"0").data.decode()
    report["generations"] = sorted(w.generation for w in pool.snapshot().workers)
    pool.close()
    report["children"] = len(psutil.Process().children(recursive=True))
    print(json.dumps(report), flush=True)
    """
)


def test_ctrl_c_kills_calls_in_flight_cancels_the_rest_and_keeps_the_pool() -> None:
    report, err, t_sent = interrupt_when_ready(CHILD, SLEEPY, timeout=30)
    assert report["raised"] == "KeyboardInterrupt", err
    assert report["interrupted"] is True and report["active"] is False
    # The 30 s calls were killed, not awaited: control came back within seconds.
    assert report["t_back"] - t_sent < 10
    assert report["outcomes"] == ["ok"] * 4 + ["cancelled"] * 8
    assert all(p == p for p in report["killed_pids"]), report  # the in-flight calls had workers
    assert all("interrupted" in e for e in report["errors"])
    assert report["after"] == "0"  # the pool is usable afterwards
    assert report["generations"] == [2, 2]  # both killed processes were replaced
    assert report["children"] == 0


CHILD_WAITING = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
    from fnrun_nb import Pool

    pool = Pool(sys.argv[1], workers=2, timeout=60, max_wait=12)
    pool.invoke(b"0")

    def announce():
        while True:
            b = pool.active_batch
            if b is not None and b.progress().done >= 2:
                time.sleep(0.5)  # two 30 s calls in flight, four runners waiting
                print("READY", flush=True)
                return
            time.sleep(0.01)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        pool.map(["0"] * 2 + ["30"] * 10, concurrency=6, progress=False)
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
    report["t_back"] = time.time()
    df = pool.last_batch.df
    report["outcomes"] = df["outcome"].astype(str).tolist()
    report["started"] = int(df["started"].notna().sum())
    report["after"] = pool.invoke(b"0").data.decode()
    time.sleep(1.0)
    report["replacements"] = pool.snapshot().replacements
    pool.close()
    print(json.dumps(report), flush=True)
    """
)


def test_ctrl_c_with_runners_waiting_for_workers_starts_no_new_call() -> None:
    """Concurrency above the workers: when Ctrl-C comes, two calls are in flight and
    four runners wait for a worker.  The waiting runners must not take the killed
    calls' replacements and start calls on them (each of which the kill sweep would
    kill in turn, until max_wait ran out): control comes back at once, only the two
    calls in flight were killed, and every row is there."""
    report, err, t_sent = interrupt_when_ready(CHILD_WAITING, SLEEPY, timeout=60)
    assert report["raised"] == "KeyboardInterrupt", err
    assert report["t_back"] - t_sent < 1.5, report
    assert report["outcomes"] == ["ok"] * 2 + ["cancelled"] * 10
    assert report["started"] == 4  # the two ok calls and the two killed in flight
    assert report["replacements"] == 2, report  # the two killed processes, no more
    assert report["after"] == "0"
