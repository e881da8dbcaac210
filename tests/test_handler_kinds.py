"""The other kinds of handler: ``Pool(protocol="lines")`` (one line in, one line out of
a long-lived process) and ``Pool(protocol="script")`` (a new process per call), on
real processes, through the same pool, batch record, monitor and errors."""

from __future__ import annotations

import io
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from fnrun_nb import HandlerStartError, Pool, PoolClosed
from fnrun_nb.batch._mux import io_threads
from fnrun_nb.batch.inputs import plan_batch
from fnrun_nb.kinds import PROTOCOLS
from fnrun_nb.lines import LineInvoker
from fnrun_nb.script import EXIT_CODE_KEY, STDERR_KEY, ScriptInvoker, status_of

from _procs import descendants, gone, interrupt_when_ready, wait_until
from _schema import assert_schema
from conftest import TEST_HANDLERS

SAME = str(TEST_HANDLERS / "kinds_same.py")
SCRIPT = str(TEST_HANDLERS / "script_cases.py")
LINES = str(TEST_HANDLERS / "lines_cases.py")
SHELL_LINES = ["sh", "-c", 'while read l; do echo "$l"; done']

pytestmark = pytest.mark.timeout(90)


# --- every kind ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bound_that_is_not_positive_is_a_value_error_before_any_process(
    protocol: str, echo_handler: str
) -> None:
    command = {"fnrun": [sys.executable, echo_handler], "lines": [sys.executable, LINES],
               "script": [sys.executable, SCRIPT]}[protocol]
    before = descendants()
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"max_frame_size must be positive, got {bad}"):
            Pool(command, workers=2, timeout=10, protocol=protocol, max_frame_size=bad)
    assert descendants() == before


# --- lines ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[sys.executable, LINES], SHELL_LINES], ids=["python", "sh"])
def test_a_line_handler_answers_each_line_with_one_line(command: list[str]) -> None:
    with Pool(command, workers=2, timeout=10, protocol="lines") as pool:
        assert pool.protocol == "lines"
        r = pool.invoke("hello world")
        assert (r.status, r.data, r.env) == (200, b"hello world", {})
        assert r.info is not None and r.info.call == 1
        batch = pool.map([f"line {i}" for i in range(20)], progress=False)
        df = batch.df
        assert_schema(df)
        assert df["outcome"].astype(str).tolist() == ["ok"] * 20
        assert df["data"].tolist() == [f"line {i}".encode() for i in range(20)]
        assert (df["status"] == 200).all()
        # Warm: two long-lived processes served all 21 calls.
        assert df["pid"].nunique() == 2 and df["call_on_worker"].max() > 1
        assert batch.config["protocol"] == "lines"


def test_lines_refuse_a_newline_an_env_and_handler_timing_before_any_call() -> None:
    with Pool([sys.executable, LINES], workers=1, timeout=10, protocol="lines") as pool:
        [before] = pool.snapshot().workers
        with pytest.raises(ValueError, match="newline at byte 1"):
            pool.invoke("a\nb")
        with pytest.raises(ValueError, match="per-call env"):
            pool.invoke("a", env={"K": "v"})
        with pytest.raises(ValueError, match="per-call env"):
            pool.submit("a", env={"K": "v"})
        with pytest.raises(ValueError, match="newline at byte 3"):
            pool.map(["ok", "ok", "abc\n"], progress=False)
        with pytest.raises(ValueError, match="per-call env"):
            pool.map(["ok"], env={"K": "v"}, progress=False)
        with pytest.raises(ValueError, match="per-call env"):
            pool.map([("ok", {"K": "v"})], progress=False)
        with pytest.raises(ValueError, match="handler timing"):
            pool.map(["ok"], handler_timing=True, progress=False)
        # Nothing was sent: the same process, no call, and it still answers.
        [after] = pool.snapshot().workers
        assert (after.pid, after.generation, after.calls, after.total_calls) == (
            before.pid, before.generation, 0, 0,
        )
        assert pool.last_batch is None
        assert pool.invoke("fine").data == b"fine"
    with pytest.raises(ValueError, match="handler timing"):
        Pool([sys.executable, LINES], workers=1, protocol="lines", handler_timing=True)
    with pytest.raises(ValueError, match="protocol must be one of 'fnrun', 'lines', 'script'"):
        Pool([sys.executable, LINES], workers=1, protocol="grpc")


def test_line_failures_are_rows_and_the_process_is_replaced() -> None:
    with Pool([sys.executable, LINES], workers=1, timeout=1.0, protocol="lines") as pool:
        first = int(pool.invoke("pid").data)
        batch = pool.map(["a", "hang", "b", "die", "c", "two", "d"], progress=False)
        df = batch.df
        assert df["outcome"].astype(str).tolist() == [
            "ok", "timeout", "ok", "crashed", "ok", "protocol_error", "ok",
        ]
        assert df["data"][df["outcome"] == "ok"].tolist() == [b"a", b"b", b"c", b"d"]
        assert df["exit_code"][3] == 3 and "dying" in df["stderr_tail"][3]
        assert "after its answer line ('two\\n')" in df["error"][5]
        # The hung call's process was killed at its deadline; each failure replaced one.
        assert gone(first)
        assert df["generation"].tolist() == [1, 1, 2, 2, 3, 3, 4]
        assert pool.snapshot().replacements == 3


def test_a_line_handler_that_cannot_start_is_a_start_error() -> None:
    with pytest.raises(HandlerStartError, match="No such file"):
        Pool([str(TEST_HANDLERS / "no_such_handler")], workers=1, protocol="lines")


def test_a_bare_line_invoker_is_a_go_style_invoker() -> None:
    inv = LineInvoker([sys.executable, LINES])
    try:
        r = inv.invoke(b"x", timeout=5)
        assert (r.status, r.data) == (200, b"x")
        with pytest.raises(ValueError):
            inv.invoke(b"x", env={"A": "b"}, timeout=5)
        assert inv.invoke(b"y", timeout=5).data == b"y"  # the refusal sent nothing
        assert "LineInvoker" in repr(inv) and "2 calls" in repr(inv)
    finally:
        inv.close()


# --- script --------------------------------------------------------------------------


def test_script_status_exit_codes_signals_deadlines_and_stderr_are_rows() -> None:
    inputs = ["ok:hi", "exit:3", "signal:SEGV", "hang", "stderr:careful", "exit:0"]
    with Pool(SCRIPT, workers=2, timeout=1.5, protocol="script") as pool:
        batch = pool.map(inputs, progress=False)
    df = batch.df
    assert_schema(df)
    assert df["outcome"].astype(str).tolist() == ["ok", "ok", "crashed", "timeout", "ok", "ok"]
    assert df["status"].tolist()[:2] == [200, 3] and df["status"][4] == 200
    assert df["data"].tolist()[:2] == [b"hi", b"bye"]
    assert df["data"][4] == b"ok"
    # The raw exit code of every call, ok rows included; -signal for a signal.
    assert df["exit_code"].tolist()[:3] == [0, 3, -signal.SIGSEGV]
    assert "SIGSEGV" in df["error"][2]
    assert "timeout" in df["error"][3] and df["exit_code"].isna()[3]
    # stderr goes to the row, ok rows too; the result env carries nothing of it.
    assert df["stderr_tail"][1] == "failing 3\n" and df["stderr_tail"][4] == "careful"
    assert df["stderr_tail"].isna()[0]
    assert df["env"].tolist() == [{}] * 6
    # A process per call: each cold, its first call, its own pid (failures too).
    assert df["cold"].all() and (df["call_on_worker"] == 1).all()
    assert df["pid"].notna().all() and df["pid"].nunique() == 6
    for pid in df["pid"]:
        assert gone(int(pid))


def test_a_script_result_carries_exit_code_and_stderr_in_its_env() -> None:
    assert [status_of(c) for c in (0, 1, 3, 200)] == [200, 1, 3, 200]
    with Pool(SCRIPT, workers=1, timeout=10, protocol="script") as pool:
        r = pool.invoke("exit:7")
        assert (r.status, r.data) == (7, b"bye")
        assert r.env == {EXIT_CODE_KEY: "7", STDERR_KEY: "failing 7\n"}
        ok = pool.invoke("pid")
        assert ok.env == {EXIT_CODE_KEY: "0"}
        assert ok.info is not None and ok.info.pid == int(ok.data) and ok.info.call == 1
        assert pool.invoke("pid").data != ok.data  # a new process for every call


def test_script_env_is_merged_over_the_process_env() -> None:
    process_env = {**os.environ, "A": "process", "B": "process"}
    with Pool(SCRIPT, workers=1, timeout=10, protocol="script", process_env=process_env) as pool:
        assert pool.invoke("env:A,B,C", env={"B": "call", "C": "call"}).data == (
            b"A=process;B=call;C=call"
        )
        batch = pool.map(["env:A,B", ("env:A,B", {"A": "item"})], env={"B": "batch"},
                         progress=False)
        assert batch.df["data"].tolist() == [b"A=process;B=batch", b"A=item;B=batch"]
        assert batch.df["env_in"].tolist() == [{"B": "batch"}, {"A": "item", "B": "batch"}]


def test_workers_bound_how_many_scripts_run_at_once(tmp_path: Path) -> None:
    with Pool(SCRIPT, workers=2, timeout=20, protocol="script") as pool:
        batch = pool.map([f"count:{tmp_path}"] * 8, concurrency=8, progress=False)
    counts = [int(d) for d in batch.df["data"]]
    assert batch.df["outcome"].astype(str).tolist() == ["ok"] * 8
    assert max(counts) <= 2, counts
    assert batch.df["wait_ms"].max() > 0  # calls beyond two waited for a worker


def test_a_script_that_cannot_be_executed_fails_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(HandlerStartError, match="No such file"):
        Pool(str(tmp_path / "missing.sh"), workers=1, protocol="script")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/no/such/interpreter\necho hi\n")
    bad.chmod(0o755)
    with pytest.raises(HandlerStartError, match="#! interpreter /no/such/interpreter"):
        Pool(str(bad), workers=1, protocol="script")
    plain = tmp_path / "plain.txt"
    plain.write_text("echo hi\n")
    with pytest.raises(HandlerStartError, match="Permission denied"):
        Pool(str(plain), workers=1, protocol="script")


def test_a_script_broken_after_the_start_is_a_start_failed_row(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\ncat\n")
    script.chmod(0o755)
    with Pool(str(script), workers=1, timeout=5, max_wait=0.5, protocol="script") as pool:
        assert pool.invoke("x").data == b"x"
        script.write_text("#!/no/such/interpreter\n")
        batch = pool.map(["y"], progress=False)
    assert batch.df["outcome"].astype(str).tolist() == ["start_failed"]
    assert "failed to execute" in batch.df["error"][0]


def test_closing_the_pool_ends_a_script_in_flight() -> None:
    pool = Pool(SCRIPT, workers=1, timeout=60, protocol="script")
    future = pool.submit("hang")
    assert wait_until(lambda: pool.snapshot().workers[0].pid is not None)
    pid = pool.snapshot().workers[0].pid
    pool.close(grace=0.2)
    with pytest.raises(PoolClosed):
        future.result(timeout=30)
    assert pid is not None and gone(pid)


def test_a_bare_script_invoker_leaves_nothing_between_calls() -> None:
    inv = ScriptInvoker([sys.executable, SCRIPT])
    try:
        r = inv.invoke(b"ok:x", timeout=5)
        assert (r.status, r.data) == (200, b"x")
        assert descendants() == [] or all(p.pid != inv.pid for p in descendants())
        assert "idle" in repr(inv)
    finally:
        inv.close()
    with pytest.raises(PoolClosed):
        inv.invoke(b"ok:x", timeout=5)


# --- the same handler, three kinds -----------------------------------------------------


def test_the_same_batch_through_the_three_kinds_gives_the_same_data() -> None:
    inputs = [f"input {i}" for i in range(12)]
    datas = {}
    for protocol in PROTOCOLS:
        with Pool([sys.executable, SAME, protocol], workers=2, timeout=20,
                  protocol=protocol) as pool:
            batch = pool.map(inputs, repeat=2, progress=False)
        df = batch.df
        assert_schema(df)
        assert df["outcome"].astype(str).tolist() == ["ok"] * 24, protocol
        assert (df["status"] == 200).all()
        datas[protocol] = df["data"].tolist()
        cold = df["cold"].sum()
        assert cold == (24 if protocol == "script" else 2), protocol
    assert datas["fnrun"] == datas["lines"] == datas["script"]
    assert datas["fnrun"][0] == b"0 TUPNI"


def test_lines_and_script_batches_take_the_thread_path() -> None:
    # Many calls in flight on few CPUs: a fnrun pool's batch is multiplexed on one I/O
    # thread there; the other kinds always take a thread per call.
    cpus = len(os.sched_getaffinity(0))
    plan = plan_batch(
        [b"x"] * 40, env=None, repeat=1, concurrency=cpus + 2, rate=None, keep_data=True,
        progress=False, workers=cpus + 2,
    )
    for protocol in PROTOCOLS:
        with Pool([sys.executable, SAME, protocol], workers=cpus + 2, timeout=20,
                  protocol=protocol) as pool:
            widths = io_threads(pool.invoker_pool, plan)
            if protocol == "fnrun":
                assert widths == [cpus + 2]
            else:
                assert widths == []
                batch = pool.map([b"x"] * 40, concurrency=cpus + 2, progress=False)
                assert batch.df["outcome"].astype(str).eq("ok").all()


def test_the_monitor_follows_a_script_pool() -> None:
    log = io.StringIO()
    with Pool(SCRIPT, workers=2, timeout=10, protocol="script") as pool:
        view = pool.monitor(mode="text", file=log, inplace=False)
        try:
            batch = pool.map(["ok:a"] * 6, progress=False)
            view.refresh(final=True)
            text = view.text()
        finally:
            view.stop()
    assert batch.df["outcome"].astype(str).eq("ok").all()
    # Each slot shows the process that ran its last call.
    last = batch.df.groupby("worker")["pid"].last()
    for pid in last:
        assert f"pid {pid}" in text, text
    assert "6 calls" in text, text


# --- Ctrl-C ----------------------------------------------------------------------------


CHILD = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import psutil
    from fnrun_nb import Pool

    protocol, ok, handler = sys.argv[1], sys.argv[2], sys.argv[3:]
    pool = Pool(handler, workers=2, timeout=60, protocol=protocol)

    def announce():
        while True:
            b = pool.active_batch
            if b is not None and b.progress().done >= 2:
                time.sleep(0.3)  # the two hanging calls are in flight now
                print("READY", flush=True)
                return
            time.sleep(0.01)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        pool.map([ok] * 2 + ["hang"] * 2 + [ok] * 4, progress=False)
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
    b = pool.last_batch
    report["outcomes"] = b.df["outcome"].astype(str).tolist()
    report["interrupted"] = b.interrupted
    report["after"] = pool.invoke(ok).status
    pool.close()
    time.sleep(0.2)
    report["children"] = [
        p.cmdline() for p in psutil.Process().children(recursive=True)
        if "fnrun-watchdog" not in " ".join(p.cmdline())
    ]
    report["threads"] = [t.name for t in threading.enumerate() if t.name.startswith("fnrun")]
    print(json.dumps(report), flush=True)
    """
)


@pytest.mark.parametrize(
    ("protocol", "ok", "handler"),
    [("lines", "fine", LINES), ("script", "ok:fine", SCRIPT)],
)
def test_ctrl_c_kills_the_calls_in_flight_and_leaves_nothing(
    protocol: str, ok: str, handler: str
) -> None:
    report, err, _ = interrupt_when_ready(CHILD, protocol, ok, sys.executable, handler)
    assert report["raised"] == "KeyboardInterrupt", err
    assert report["interrupted"] is True
    assert report["outcomes"] == ["ok"] * 2 + ["cancelled"] * 6
    assert report["after"] == 200
    assert report["children"] == [] and report["threads"] == []




CHILD_INVOKE = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import psutil
    from fnrun_nb import Pool

    protocol, ok, handler = sys.argv[1], sys.argv[2], sys.argv[3:]
    pool = Pool(handler, workers=1, timeout=60, protocol=protocol)
    pool.invoke(ok)

    def announce():
        while pool.snapshot().workers[0].state.value != "busy":
            time.sleep(0.01)
        time.sleep(0.3)  # the hanging call is in flight now
        print("READY", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    report = {}
    try:
        pool.invoke("hang")
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
    report["after"] = pool.invoke(ok).status
    report["generation"] = pool.snapshot().workers[0].generation
    pool.close()
    time.sleep(0.2)
    report["children"] = [
        p.cmdline() for p in psutil.Process().children(recursive=True)
        if "fnrun-watchdog" not in " ".join(p.cmdline())
    ]
    report["threads"] = [t.name for t in threading.enumerate() if t.name.startswith("fnrun")]
    print(json.dumps(report), flush=True)
    """
)


@pytest.mark.parametrize(
    ("protocol", "ok", "handler"),
    [("lines", "fine", LINES), ("script", "ok:fine", SCRIPT)],
)
def test_ctrl_c_during_one_call_kills_its_process_and_the_pool_goes_on(
    protocol: str, ok: str, handler: str
) -> None:
    report, err, _ = interrupt_when_ready(CHILD_INVOKE, protocol, ok, sys.executable, handler)
    assert report["raised"] == "KeyboardInterrupt", err
    assert report["after"] == 200 and report["generation"] == 2  # replaced, usable
    assert report["children"] == [] and report["threads"] == []


def test_a_script_answer_over_the_size_bound_is_a_protocol_error() -> None:
    with Pool(SCRIPT, workers=1, timeout=10, protocol="script", max_frame_size=100) as pool:
        batch = pool.map(["ok:" + "x" * 99, "ok:" + "x" * 101], progress=False)
    df = batch.df
    assert df["outcome"].astype(str).tolist() == ["ok", "protocol_error"]
    assert "more than 100 bytes" in df["error"][1]
    assert gone(int(df["pid"][1]))


def test_a_spawn_whose_caller_gave_up_is_ended_whichever_thread_comes_second() -> None:
    from fnrun_nb.script import _Spawn, _Spawner

    spawner = _Spawner()
    try:
        # The caller gave up before the spawner ran it: the spawner ends the process.
        early = _Spawn([sys.executable, SCRIPT], None, dict(os.environ), 4096)
        assert early.abandon() is None
        spawner.start(early)
        assert early.done.wait(30)
        assert early.proc is None and early.error is None
        # The spawner ran it first: the caller gets the process and ends it.
        late = _Spawn([sys.executable, SCRIPT], None, dict(os.environ), 4096)
        spawner.start(late)
        assert late.done.wait(30)
        proc = late.abandon()
        assert proc is not None and proc.returncode is None
        proc.kill()
        proc._finish_close(0.0)
        assert gone(proc.pid)
    finally:
        spawner.stop()
    # A spawn after stop() fails at once rather than waiting for an ended thread.
    after = _Spawn([sys.executable, SCRIPT], None, dict(os.environ), 4096)
    spawner.start(after)
    assert after.done.is_set() and isinstance(after.error, PoolClosed)
