"""``InvokerPool`` and the ``Pool`` front: concurrency, replacement, recycling,
shutdown, snapshots, foreign handlers.  Real processes; every wait is bounded."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import wait as wait_futures
from pathlib import Path

import psutil
import pytest
from conftest import HANDLERS, TEST_HANDLERS

from fnrun_nb import (
    AvailabilityTimeout,
    CmdInvokerFactory,
    HandlerCrashed,
    HandlerStartError,
    Input,
    InvocationTimeout,
    InvokerPool,
    InvokerPoolConfig,
    MissingTimeout,
    Pool,
    PoolClosed,
    PoolSnapshot,
    ProtocolError,
    Result,
    WorkerState,
)
from fnrun_nb.invoker import CmdInvoker

FAULTY = str(TEST_HANDLERS / "faulty.py")
PROBE = str(TEST_HANDLERS / "core_probe.py")
ECHO = str(HANDLERS / "echo.py")


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached within the timeout")
        time.sleep(0.01)


def all_idle(pool: Pool) -> bool:
    return all(w.state is WorkerState.IDLE for w in pool.snapshot().workers)




# --- calls ------------------------------------------------------------------------------


def test_invoke_takes_bytes_str_and_input() -> None:
    with Pool(ECHO, workers=2, timeout=10) as pool:
        assert pool.invoke(b"b").data == b"b"
        assert pool.invoke("wörld").data == "wörld".encode()
        assert pool.invoke(Input(b"i")).data == b"i"
        assert pool.invoke("x", env={"K": "v"}).env == {"K": "v"}
        with pytest.raises(TypeError, match="bytes, str or Input"):
            pool.invoke(42)  # type: ignore[arg-type]
        r = pool.invoke(b"facts")
        assert r.info is not None and r.info.worker in (0, 1) and r.info.generation == 1
        assert r.info.deadline == pytest.approx(r.info.started + 10)
        assert r.info.wait >= 0 and r.info.service > 0


def test_eight_threads_fifty_calls_each_on_four_workers() -> None:
    errors: list[BaseException] = []
    with Pool(ECHO, workers=4, max_wait=60, timeout=30) as pool:
        def work(t: int) -> None:
            try:
                for i in range(50):
                    payload = f"{t}:{i}".encode()
                    r = pool.invoke(payload, env={"t": str(t)})
                    assert (r.status, r.data, r.env) == (200, payload, {"t": str(t)})
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        snap = pool.snapshot()
        assert snap.calls == 400 and snap.failures == 0 and snap.replacements == 0
        assert sum(w.total_calls for w in snap.workers) == 400
        assert {w.generation for w in snap.workers} == {1}
        assert all(w.calls > 0 for w in snap.workers), "every worker served calls"


def test_submit_returns_futures() -> None:
    with Pool(FAULTY, workers=2, timeout=10) as pool:
        futures = [pool.submit(f"n{i}") for i in range(20)]
        bad = pool.submit(b"!exit:3")
        done, _ = wait_futures([*futures, bad], timeout=60)
        assert len(done) == 21
        assert [f.result().data for f in futures] == [f"n{i}".encode() for i in range(20)]
        assert isinstance(bad.exception(), HandlerCrashed)
        assert "exit code 3" in str(bad.exception())
        with pytest.raises(TypeError):
            pool.submit(3.5)  # type: ignore[arg-type]
    with pytest.raises(PoolClosed):
        pool.submit(b"late")


def test_per_call_timeout_overrides_the_pool_timeout() -> None:
    with Pool(FAULTY, workers=1, timeout=30) as pool:
        t0 = time.monotonic()
        with pytest.raises(InvocationTimeout) as caught:
            pool.invoke(b"!hang", timeout=0.3)
        assert time.monotonic() - t0 < 10
        info = caught.value.info
        assert info is not None and info.worker == 0 and info.generation == 1
        with pytest.raises(ValueError, match="timeout must be > 0"):
            pool.invoke(b"x", timeout=0)
        assert pool.invoke(b"after").data == b"after"


def test_result_env_duplicate_names_through_the_pool() -> None:
    with Pool(PROBE, workers=1) as pool:
        assert pool.invoke(b"dup_env").env == {"A": "2", "B": "x"}


# --- failures and replacement -------------------------------------------------------------


def test_failed_call_replaces_its_worker() -> None:
    with Pool(FAULTY, workers=2, timeout=10) as pool:
        first = pool.invoke(b"!pid").info
        assert first is not None
        with pytest.raises(HandlerCrashed, match="killed by SIGSEGV") as caught:
            pool.invoke(b"!sigsegv")
        failed = caught.value.info
        assert failed is not None and failed.generation == 1
        wait_until(lambda: all_idle(pool))
        snap = pool.snapshot()
        assert snap.failures == 1 and snap.replacements == 1
        slot = snap.workers[failed.worker]
        assert slot.generation == 2 and slot.pid != failed.pid
        assert slot.last_error is not None and "SIGSEGV" in slot.last_error
        assert not psutil.pid_exists(failed.pid) or psutil.Process(failed.pid).status() == "zombie"
        results = [pool.invoke(b"ok") for _ in range(10)]
        assert all(r.data == b"ok" for r in results)


@pytest.mark.parametrize(
    ("fault", "error"),
    [(b"!garbage_prefix", ProtocolError), (b"!stdout_noise", ProtocolError),
     (b"!half_frame", HandlerCrashed), (b"!exit:3", HandlerCrashed)],
)
def test_every_failure_kind_leaves_a_full_pool(fault: bytes, error: type) -> None:
    with Pool(FAULTY, workers=2, timeout=20) as pool:
        with pytest.raises(error):
            pool.invoke(fault)
        wait_until(lambda: all_idle(pool))
        assert [w.state for w in pool.snapshot().workers] == [WorkerState.IDLE] * 2
        assert pool.invoke(b"fine").data == b"fine"


def test_worker_dying_while_idle_is_replaced_and_calls_go_elsewhere() -> None:
    with Pool(FAULTY, workers=2, timeout=10, process_env={"FAULTY_EXIT_AFTER_ANSWER": "1"}) as pool:
        for i in range(10):  # every process exits right after answering
            assert pool.invoke(f"c{i}").data == f"c{i}".encode()
        wait_until(lambda: pool.snapshot().replacements >= 10)
        assert pool.snapshot().failures == 0, "an idle death is not a failed call"


class FlakyFactory:
    """A factory that fails ``failures`` times after its first ``ok_first`` starts."""

    def __init__(self, ok_first: int, failures: int) -> None:
        self.inner = CmdInvokerFactory(FAULTY)
        self.argv = self.inner.argv
        self.ok_first = ok_first
        self.failures = failures
        self.calls = 0
        self.failed = 0

    def new_invoker(self) -> CmdInvoker:
        self.calls += 1
        if self.calls > self.ok_first and self.failed < self.failures:
            self.failed += 1
            raise HandlerStartError(self.argv, f"simulated start failure {self.failed}")
        return self.inner.new_invoker()


def test_failed_replacement_never_shrinks_the_pool() -> None:
    factory = FlakyFactory(ok_first=2, failures=4)
    config = InvokerPoolConfig(max_invokers=2, factory=factory, max_wait=30, max_runnable_time=10)
    with InvokerPool(config) as pool:
        with pytest.raises(HandlerCrashed):
            pool.invoke(Input(b"!exit:3"))
        # The replacement fails four times (with backoff), then works.
        wait_until(lambda: factory.failed == 4 and all(
            w.state is WorkerState.IDLE for w in pool.snapshot().workers), timeout=30)
        snap = pool.snapshot()
        assert len(snap.workers) == 2
        assert sorted(w.generation for w in snap.workers) == [1, 2]
        assert snap.replacements == 1
        # Both slots serve: two concurrent slow calls run side by side.
        threads = [threading.Thread(target=pool.invoke, args=(Input(b"!sleep:0.3"),))
                   for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: pool.snapshot().count(WorkerState.BUSY) == 2)
        for t in threads:
            t.join(30)


class GatedFactory:
    """A factory whose starts fail (a real ``HandlerStartError``: the program does not
    exist) while ``healthy`` is False."""

    def __init__(self) -> None:
        self.healthy = True
        self.failed = 0

    def new_invoker(self) -> CmdInvoker:
        if self.healthy:
            return CmdInvoker(FAULTY)
        self.failed += 1
        return CmdInvoker(FAULTY + ".missing")


def test_crashed_slot_is_starting_while_its_replacement_backs_off() -> None:
    factory = GatedFactory()
    config = InvokerPoolConfig(max_invokers=1, factory=factory, max_wait=30, max_runnable_time=10)
    with InvokerPool(config) as pool:
        factory.healthy = False
        with pytest.raises(HandlerCrashed):
            pool.invoke(Input(b"!exit:3"))
        # The supervisor took the crashed slot over: it is starting (not crashed) while
        # the replacement fails and backs off, and it keeps the reason.
        wait_until(lambda: factory.failed >= 2)
        (w,) = pool.snapshot().workers
        assert w.state is WorkerState.STARTING and w.generation == 1
        assert w.last_error is not None and "No such file" in w.last_error
        factory.healthy = True
        wait_until(lambda: pool.snapshot().workers[0].state is WorkerState.IDLE, timeout=30)
        (w,) = pool.snapshot().workers
        assert w.generation == 2 and pool.invoke(Input(b"back")).data == b"back"


def test_handler_that_cannot_start_raises_quickly_on_invoke() -> None:
    with Pool(str(TEST_HANDLERS / "syntax_error.py"), workers=2, max_wait=30, timeout=30) as pool:
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(HandlerStartError, match="SyntaxError"):
                pool.invoke(b"x")
            assert time.monotonic() - t0 < 15, "no wait for max_wait or the timeout"


def test_constructor_raises_when_no_worker_can_start(tmp_path: Path) -> None:
    with pytest.raises(HandlerStartError, match="No such file"):
        Pool(str(tmp_path / "missing.py"))
    calls = []

    class Broken:
        argv = ["broken"]

        def new_invoker(self) -> CmdInvoker:
            calls.append(1)
            raise HandlerStartError(["broken"], "nope")

    with pytest.raises(HandlerStartError, match="nope"):
        InvokerPool(InvokerPoolConfig(3, Broken(), 1.0, 1.0))  # type: ignore[arg-type]
    assert len(calls) == 3


def test_constructor_raises_when_no_worker_can_exec_its_handler(tmp_path: Path) -> None:
    """A script whose #! interpreter does not exist passes every check before the
    spawn; the exec fails behind setpriv, and the constructor says so, once."""
    script = tmp_path / "bad_shebang.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    with pytest.raises(HandlerStartError) as caught:
        Pool(str(script), workers=2, timeout=5)
    assert str(caught.value) == (
        f"cannot start handler {str(script)!r}:"
        f" failed to execute {script}: No such file or directory"
    )
    assert caught.value.reason == f"failed to execute {script}: No such file or directory"


START_GATE = str(TEST_HANDLERS / "start_gate.py")
GATE_CLOSED = "the process ended (exit code 4) before reading its first input; stderr:\ngate closed"


def test_a_handler_that_dies_at_start_is_restarted_with_backoff(tmp_path: Path) -> None:
    """Processes that end before answering a call are start failures: the idle pool
    restarts them with growing waits (not in a tight loop), says why in the snapshot
    and in the error, once, and the first answered call resets the count."""
    gate = tmp_path / "gate"
    argv = [sys.executable, START_GATE, str(gate)]
    with Pool(argv, workers=2, max_wait=30, timeout=10) as pool:
        time.sleep(3.0)
        snap = pool.snapshot()
        # 50 ms, 100 ms, 200 ms, ... per slot: a handful in 3 s (a tight loop made
        # about 170 here).
        assert 2 <= snap.replacements <= 16, snap.replacements
        for w in snap.workers:
            assert w.start_failures >= 3, w
            assert w.last_error == GATE_CLOSED
        expected = f"cannot start handler {' '.join(argv)!r}: {GATE_CLOSED}"
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(HandlerStartError) as caught:
                pool.invoke(b"x")
            assert str(caught.value) == expected
            assert time.monotonic() - t0 < 5, "fails fast, without waiting out max_wait"
        assert pool.snapshot().failures <= 3
        gate.touch()

        def both_answer() -> bool:
            # A process started just before the gate opened may still die; the next
            # attempt (at most 2 s away) starts, and its first call resets the count.
            try:
                assert pool.invoke(b"open").data == b"open"
                assert pool.invoke(b"open").data == b"open"
            except HandlerStartError:
                return False
            return all(w.start_failures == 0 for w in pool.snapshot().workers)

        wait_until(both_answer, timeout=15)
        assert pool.snapshot().count(WorkerState.IDLE) == 2


def test_a_start_failure_always_carries_its_stderr(tmp_path: Path) -> None:
    """The reason of a process that died at start includes what it wrote to stderr,
    even when the call reaps it before the watcher has read that stderr (an exec
    failure behind setpriv ends within a millisecond: the two race every time)."""
    script = tmp_path / "bad_shebang.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    for _ in range(20):
        inv = CmdInvoker(str(script))
        try:
            # HandlerStartError when the call finds the process ending; HandlerCrashed
            # ("not running") when the watcher has seen the exit before the call.
            with pytest.raises((HandlerStartError, HandlerCrashed)) as caught:
                inv.invoke(b"x", timeout=5)
            err = caught.value
            said = err.reason if isinstance(err, HandlerStartError) else err.stderr_tail
            assert f"failed to execute {script}: No such file or directory" in said
        finally:
            inv.close()


def test_config_validation() -> None:
    factory = CmdInvokerFactory(ECHO)
    with pytest.raises(MissingTimeout):
        InvokerPoolConfig(1, factory, 1.0, None)  # type: ignore[arg-type]
    for bad in [dict(max_invokers=0), dict(max_wait=-1), dict(max_runnable_time=0),
                dict(max_calls_per_worker=0)]:
        kwargs = dict(max_invokers=1, factory=factory, max_wait=1.0, max_runnable_time=1.0)
        kwargs.update(bad)
        with pytest.raises(ValueError):
            InvokerPoolConfig(**kwargs)  # type: ignore[arg-type]


# --- waiting for a worker -----------------------------------------------------------------


def test_availability_timeout_keeps_gos_message() -> None:
    with Pool(FAULTY, workers=1, max_wait=0.2, timeout=10) as pool:
        busy = pool.submit(b"!sleep:1.5")
        wait_until(lambda: pool.snapshot().count(WorkerState.BUSY) == 1)
        with pytest.raises(AvailabilityTimeout, match="could not get access to invoker before timeout"):
            pool.invoke(b"x")
        assert busy.result(30).data == b"slept"


def test_recycling_after_max_calls_per_worker() -> None:
    with Pool(PROBE, workers=1, timeout=10, max_calls_per_worker=3) as pool:
        infos = [pool.invoke(f"{i}").info for i in range(7)]
        assert all(i is not None for i in infos)
        gens = [i.generation for i in infos]  # type: ignore[union-attr]
        calls = [i.call for i in infos]  # type: ignore[union-attr]
        pids = [i.pid for i in infos]  # type: ignore[union-attr]
        assert gens == [1, 1, 1, 2, 2, 2, 3]
        assert calls == [1, 2, 3, 1, 2, 3, 1]
        assert len(set(pids)) == 3
        snap = pool.snapshot()
        assert snap.replacements == 2 and snap.failures == 0 and snap.calls == 7


class Wrapped:
    """A Go-style ``Invoker`` that is not a ``CmdInvoker`` (it wraps one), so the pool
    drives it through its generic path."""

    def __init__(self) -> None:
        self.inner = CmdInvoker(FAULTY)
        self.pid = self.inner.pid

    def invoke(self, input: Input, *, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Result:
        return self.inner.invoke(input, env=env, timeout=timeout)

    def close(self) -> None:
        self.inner.close()


class WrappedFactory:
    argv = [FAULTY]

    def new_invoker(self) -> Wrapped:
        return Wrapped()


def test_generic_invoker_counts_calls_per_process_and_recycles() -> None:
    config = InvokerPoolConfig(max_invokers=1, factory=WrappedFactory(), max_wait=10,
                               max_runnable_time=10, max_calls_per_worker=3)
    with InvokerPool(config) as pool:
        infos = [pool.invoke(Input(b"a")).info, pool.invoke(Input(b"b")).info]
        with pytest.raises(HandlerCrashed) as caught:
            pool.invoke(Input(b"!exit:3"))
        assert caught.value.info is not None and caught.value.info.call == 3
        # After the replacement the new process's calls count from 1 again (a cold
        # call), and it is recycled after max_calls_per_worker like a CmdInvoker.
        infos += [pool.invoke(Input(f"{i}".encode())).info for i in range(4)]
        assert [i.call for i in infos] == [1, 2, 1, 2, 3, 1]  # type: ignore[union-attr]
        assert [i.generation for i in infos] == [1, 1, 2, 2, 2, 3]  # type: ignore[union-attr]
        assert len({i.pid for i in infos}) == 3  # type: ignore[union-attr]
        snap = pool.snapshot()
        assert snap.failures == 1, "one failed call is counted once"
        assert snap.calls == 7 and snap.replacements == 2
        assert snap.workers[0].calls == 1 and snap.workers[0].total_calls == 7


def test_interrupt_while_recycling_after_a_call_never_strands_the_worker() -> None:
    """A Ctrl-C that lands on entry to ``_retire`` on the recycle path (a successful
    call that reached max_calls_per_worker) propagates, and the slot is still recycled:
    it is never left busy with nobody to hand it back."""
    config = InvokerPoolConfig(max_invokers=1, factory=CmdInvokerFactory(FAULTY), max_wait=5,
                               max_runnable_time=10, max_calls_per_worker=1)
    with InvokerPool(config) as pool:
        retire = pool._retire
        interrupted = []

        def interrupt_once(*args, **kwargs):  # type: ignore[no-untyped-def]
            # What the eval loop does when SIGINT is pending as a function is entered.
            if not interrupted:
                interrupted.append(True)
                raise KeyboardInterrupt
            return retire(*args, **kwargs)

        pool._retire = interrupt_once  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            pool.invoke(Input(b"first"))
        assert interrupted
        wait_until(lambda: pool.snapshot().workers[0].state is WorkerState.IDLE)
        info = pool.invoke(Input(b"again")).info
        assert info is not None and info.generation == 2 and info.call == 1
        snap = pool.snapshot()
        assert snap.failures == 0 and snap.calls == 2


# --- shutdown -------------------------------------------------------------------------------


def test_close_with_calls_in_flight() -> None:
    pool = Pool(FAULTY, workers=2, timeout=30)
    hung = [pool.submit(b"!hang") for _ in range(2)]
    wait_until(lambda: pool.snapshot().count(WorkerState.BUSY) == 2)
    waiting = pool.submit(b"queued")
    pids = [w.pid for w in pool.snapshot().workers]
    t0 = time.monotonic()
    pool.close(grace=0.2)
    assert time.monotonic() - t0 < 10
    for f in [*hung, waiting]:
        assert isinstance(f.exception(10), PoolClosed) or f.cancelled()
    assert all(not psutil.pid_exists(p) for p in pids if p is not None)
    assert pool.closed and all(w.state is WorkerState.CLOSED for w in pool.snapshot().workers)
    pool.close()  # idempotent
    with pytest.raises(PoolClosed):
        pool.invoke(b"late")
    assert "closed" in repr(pool)


def test_grandchild_of_a_handler_is_killed_on_close() -> None:
    with Pool(FAULTY, workers=1, timeout=10) as pool:
        grandchild = int(pool.invoke(b"!grandchild").env["grandchild"])
        assert psutil.pid_exists(grandchild)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"grandchild {grandchild} outlived the pool")


# --- starting ---------------------------------------------------------------------------------


def test_eight_workers_start_in_parallel() -> None:
    # Each process takes 2 s to boot.  Started one after another (each waited for),
    # the last would start after the first was ready; started in parallel, every
    # process has started before any is ready.
    with Pool(PROBE, workers=8, max_wait=60, timeout=30,
              process_env={"CORE_PROBE_BOOT_S": "2", "PATH": "/usr/bin:/bin"}) as pool:
        # Hold each worker for a moment so that the 8 calls land on 8 processes.
        futures = [pool.submit(b"sleep:0.5") for _ in range(8)]
        for f in futures:
            f.result(60)
        boots = [json.loads(pool.invoke(b"boot").data) for _ in range(8)]
        by_pid = {b["pid"]: b for b in boots}
        for w in pool.snapshot().workers:
            assert w.pid is not None
        pids = {w.pid for w in pool.snapshot().workers}
        while set(by_pid) != pids:  # round-robin may repeat: ask until all are heard
            b = json.loads(pool.invoke(b"boot").data)
            by_pid[b["pid"]] = b
        assert len(by_pid) == 8
        last_started = max(b["started"] for b in by_pid.values())
        first_ready = min(b["ready"] for b in by_pid.values())
        assert last_started < first_ready


# --- observation ------------------------------------------------------------------------------


def test_snapshot_fields() -> None:
    with Pool(FAULTY, workers=2, timeout=10) as pool:
        snap = pool.snapshot()
        assert isinstance(snap, PoolSnapshot)
        assert [w.slot for w in snap.workers] == [0, 1]
        assert snap.calls == snap.failures == snap.replacements == 0 and not snap.closed
        assert all(w.state in (WorkerState.IDLE, WorkerState.STARTING) for w in snap.workers)
        assert all(w.generation == 1 and w.calls == 0 for w in snap.workers)
        pool.invoke(b"warm")  # the process has booted: its RSS is the interpreter's
        busy = pool.submit(b"!sleep:1")
        # Busy, and the call begun: a slot turns busy just before its call starts.
        wait_until(lambda: any(w.state is WorkerState.BUSY and w.call_started is not None
                               for w in pool.snapshot().workers))
        during = pool.snapshot(rss=True)
        (w,) = [w for w in during.workers if w.state is WorkerState.BUSY]
        assert w.call_started is not None and w.deadline == pytest.approx(w.call_started + 10)
        assert w.pid is not None and w.rss is not None and w.rss > 1 << 20
        idle = [w for w in during.workers if w.state is WorkerState.IDLE]
        assert all(i.call_started is None and i.deadline is None for i in idle)
        busy.result(30)
        after = pool.snapshot()
        assert after.calls == 2 and after.taken >= during.taken
        with pytest.raises(Exception):
            after.calls = 5  # type: ignore[misc]
        assert str(WorkerState.BUSY) == "busy"


def test_reprs_tell_the_state() -> None:
    pool = Pool(ECHO, workers=2, timeout=10)
    try:
        pool.invoke(b"x")
        text = repr(pool)
        assert "2 workers" in text and "idle" in text and "1 calls" in text
        assert "replacements" in text and "echo.py" in text
        assert "InvokerPool 2 workers" in repr(pool.invoker_pool)
        assert pool.stderr() == {0: "", 1: ""}
    finally:
        pool.close()
    assert "closed" in repr(pool) and "closed" in repr(pool.invoker_pool)


# --- handlers in other languages, and the example handlers ---------------------------------


def test_c_handler_through_the_pool(c_echo: str) -> None:
    with Pool(c_echo, workers=2, timeout=10) as pool:
        r = pool.invoke(b"from C", env={"LANG": "c", "NAME": "wörld"})
        assert r == Result(200, b"from C", {"LANG": "c", "NAME": "wörld"})
        assert pool.invoke(b"").data == b""
        big = bytes(range(256)) * 4096
        assert pool.invoke(big).data == big
        results = [f.result(30) for f in [pool.submit(f"{i}") for i in range(50)]]
        assert [r.data for r in results] == [f"{i}".encode() for i in range(50)]


def test_example_handlers() -> None:
    with Pool(str(HANDLERS / "slow.py"), workers=2, timeout=10) as slow:
        r = slow.invoke(b"x", env={"sleep_ms": "20"})
        assert r.env["slept_ms"] == "20" and r.info is not None and r.info.service >= 0.02
        assert slow.invoke(b"5").env["slept_ms"] == "5"
    with Pool(str(HANDLERS / "flaky.py"), workers=2, timeout=10) as flaky:
        assert flaky.invoke(b"12").data == b"12"
        error = flaky.invoke(b"13")
        assert error.status == 500 and error.data.startswith(b"RuntimeError")
        with pytest.raises(HandlerCrashed, match="exit code 3"):
            flaky.invoke(b"17")
        with pytest.raises(HandlerCrashed, match="SIGSEGV"):
            flaky.invoke(b"segfault")
        with pytest.raises(InvocationTimeout):
            flaky.invoke(b"hang", timeout=0.3)

