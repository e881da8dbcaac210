"""``InvokerPool`` with code the project did not write: custom factories and invokers
that raise at construction, at replacement, now and then, or from ``close()``; exit
callbacks that raise in the process watcher.  Each test checks that the thread that
met the fault is alive and that the pool serves calls again once the fault stops.

The custom invoker wraps a real handler process (``CmdInvoker`` of ``faulty.py``)
without being one, so the pool drives it through its adapter, as it would any
Go-style ``Invoker``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping

import pytest
from _procs import gone, wait_until
from conftest import TEST_HANDLERS

from fnrun_nb import (
    AvailabilityTimeout,
    CmdInvokerFactory,
    HandlerStartError,
    Input,
    InvocationError,
    InvokerPool,
    InvokerPoolConfig,
    Result,
    WorkerState,
)
from fnrun_nb.invoker import CmdInvoker

FAULTY = str(TEST_HANDLERS / "faulty.py")


class WrappedInvoker:
    """A user invoker around a real handler process: ``invoke`` raises ``ValueError``
    for the input ``b"!raise"``; ``close()`` closes the process, then raises
    ``close_error`` when one is set."""

    def __init__(self, close_error: BaseException | None) -> None:
        self.inner = CmdInvoker(FAULTY)
        self.close_error = close_error

    def invoke(
        self, input: Input, *, env: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> Result:
        if input.data == b"!raise":
            raise ValueError("the invoker refused this input")
        return self.inner.invoke(input, env=env, timeout=timeout)

    def close(self) -> None:
        self.inner.close(0.0)
        if self.close_error is not None:
            raise self.close_error


class Factory:
    """Makes ``WrappedInvoker``s; raises ``fail`` (when set) instead, every time or on
    every ``every``-th attempt; ``close_error`` goes to the invokers it makes."""

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.every = 1
        self.close_error: BaseException | None = None
        self.attempts = 0
        self.made: list[WrappedInvoker] = []

    def new_invoker(self) -> WrappedInvoker:
        self.attempts += 1
        if self.fail is not None and self.attempts % self.every == 0:
            raise self.fail
        inv = WrappedInvoker(self.close_error)
        self.made.append(inv)
        return inv


def supervisor_alive(pool: InvokerPool) -> bool:
    return pool._supervisor.thread.is_alive()


def config(factory: object, workers: int = 1, max_wait: float = 10.0) -> InvokerPoolConfig:
    return InvokerPoolConfig(
        max_invokers=workers, factory=factory, max_wait=max_wait, max_runnable_time=10.0,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("error", [OSError(24, "Too many open files"), RuntimeError("no license")])
def test_a_factory_that_cannot_create_an_invoker_fails_the_constructor_promptly(
    error: BaseException,
) -> None:
    """The seed scenario: the constructor raises (it used to hang forever), after one
    attempt per slot, with the factory's exception as the cause."""
    factory = Factory()
    factory.fail = error
    outcome: list[BaseException] = []

    def construct() -> None:
        try:
            InvokerPool(config(factory, workers=3, max_wait=30.0))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=construct)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the constructor hung"
    (exc,) = outcome
    assert isinstance(exc, HandlerStartError)
    assert exc.__cause__ is error
    assert exc.reason == f"{type(error).__name__}: {error}"
    assert factory.attempts == 3


def test_an_invoker_exception_is_an_invocation_error_and_its_invoker_is_replaced() -> None:
    factory = Factory()
    with InvokerPool(config(factory)) as pool:
        first = factory.made[0]
        with pytest.raises(InvocationError) as caught:
            pool.invoke(Input(b"!raise"))
        assert isinstance(caught.value.__cause__, ValueError)
        assert caught.value.info is not None and caught.value.info.worker == 0
        wait_until(lambda: pool.snapshot().workers[0].state is WorkerState.IDLE)
        w = pool.snapshot().workers[0]
        assert w.generation == 2
        assert w.last_error is not None and "ValueError: the invoker refused this input" in w.last_error
        assert w.last_error != "call interrupted"
        assert gone(first.inner.pid), "the failed invoker was closed"
        assert pool.invoke(Input(b"back")).data == b"back"
        assert pool.snapshot().failures == 1


def test_factory_errors_at_replacement_are_retried_and_never_kill_the_supervisor() -> None:
    """After a factory has produced an invoker, its errors never make a call fail
    fast: callers wait for a replacement up to max_wait, then get HandlerStartError
    with the last reason; once the factory works again, so does the pool."""
    factory = Factory()
    with InvokerPool(config(factory, workers=2, max_wait=0.5)) as pool:
        factory.fail = RuntimeError("the database is down")
        for _ in range(2):
            with pytest.raises(InvocationError):
                pool.invoke(Input(b"!raise"))
        assert wait_until(lambda: all(
            w.start_failures >= 2 for w in pool.snapshot().workers
        ))
        for w in pool.snapshot().workers:
            assert w.last_error == "RuntimeError: the database is down"
            assert w.state is WorkerState.STARTING
        assert supervisor_alive(pool)
        t0 = time.monotonic()
        with pytest.raises(HandlerStartError, match="the database is down") as caught:
            pool.invoke(Input(b"x"))
        assert not isinstance(caught.value, AvailabilityTimeout)
        assert time.monotonic() - t0 >= 0.5, "waited out max_wait (no fail fast)"
        factory.fail = None
        assert wait_until(lambda: all(
            w.state is WorkerState.IDLE for w in pool.snapshot().workers
        ))
        assert pool.invoke(Input(b"back")).data == b"back"
        assert supervisor_alive(pool)


def test_an_intermittent_factory_never_shrinks_the_pool() -> None:
    """Every other attempt fails: every replacement is retried until it works."""
    factory = Factory()
    with InvokerPool(config(factory, workers=2, max_wait=30.0)) as pool:
        factory.fail = OSError(11, "Resource temporarily unavailable")
        factory.every = 2
        for i in range(8):
            with pytest.raises(InvocationError):
                pool.invoke(Input(b"!raise"))
            assert pool.invoke(Input(b"ok %d" % i)).data == b"ok %d" % i
        assert supervisor_alive(pool)
        assert wait_until(lambda: all(
            w.state is WorkerState.IDLE for w in pool.snapshot().workers
        ))
        snap = pool.snapshot()
        assert snap.replacements == 8 and snap.failures == 8


def test_an_invoker_whose_close_raises_is_recorded_and_replaced() -> None:
    factory = Factory()
    factory.close_error = RuntimeError("close failed")
    with InvokerPool(config(factory)) as pool:
        with pytest.raises(InvocationError):
            pool.invoke(Input(b"!raise"))
        assert wait_until(lambda: pool.snapshot().workers[0].generation == 2)
        w = pool.snapshot().workers[0]
        assert w.last_error == "RuntimeError: close failed"
        assert w.start_failures == 1
        assert supervisor_alive(pool)
        assert pool.invoke(Input(b"back")).data == b"back"
        assert pool.snapshot().workers[0].start_failures == 0
    # close() logged the error of the last invoker's close() and did not raise; every
    # process was ended (the leak check would fail otherwise).
    assert all(gone(inv.inner.pid) for inv in factory.made)


def test_the_watcher_survives_an_exit_callback_that_raises() -> None:
    """A user's ``on_exit`` that raises is logged; the watcher thread goes on noticing
    exits (here, an idle death in a pool, replaced as usual)."""
    bystander = CmdInvoker(FAULTY)  # keeps the watcher thread alive throughout
    victim = CmdInvoker(FAULTY)
    try:
        def explode(_: object) -> None:
            raise RuntimeError("a user callback failed")

        victim.on_exit = explode
        watcher = next(t for t in threading.enumerate() if t.name == "fnrun-watcher")
        os.kill(victim.pid, signal.SIGKILL)
        assert wait_until(lambda: victim.exited)
        assert watcher.is_alive()
        factory = CmdInvokerFactory(FAULTY)
        with InvokerPool(config(factory, max_wait=10.0)) as pool:
            pool.invoke(Input(b"first"))
            pid = pool.snapshot().workers[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda: pool.snapshot().workers[0].generation == 2)
            assert pool.invoke(Input(b"again")).data == b"again"
            assert pool.snapshot().failures == 0
        assert watcher.is_alive()
    finally:
        victim.close(0.0)
        bystander.close(0.0)


def test_the_monitor_refresher_survives_faults_in_a_custom_pool() -> None:
    """The live monitor reads a pool whose invokers raise and whose factory fails now
    and then: its refresher thread keeps refreshing, records no error, and the pool
    serves once the faults stop."""
    from fnrun_nb.widgets import monitor

    factory = Factory()
    with InvokerPool(config(factory, workers=2, max_wait=30.0)) as pool:
        mon = monitor(pool, mode="text", interval=0.1, rss=True)
        try:
            factory.fail = RuntimeError("no license today")
            factory.every = 2
            for i in range(6):
                with pytest.raises(InvocationError):
                    pool.invoke(Input(b"!raise"))
                assert pool.invoke(Input(b"ok %d" % i)).data == b"ok %d" % i
            factory.fail = None
            before = mon.refreshes
            assert wait_until(lambda: mon.refreshes >= before + 3)
            assert mon._thread is not None and mon._thread.is_alive()
            assert mon.error is None
            assert pool.invoke(Input(b"after")).data == b"after"
        finally:
            mon.stop()
        assert supervisor_alive(pool)


def test_batch_runner_threads_record_a_custom_invokers_errors_and_go_on() -> None:
    """Every call of a batch whose invoker raises now and then is a row; the runner
    threads go on after each error and the batch completes."""
    from types import SimpleNamespace

    from fnrun_nb.batch import run_batch
    from fnrun_nb.settings import PoolSettings

    factory = Factory()
    with InvokerPool(config(factory, workers=2, max_wait=30.0)) as inner:
        # A pool as the batch runner reads it, around an InvokerPool of user invokers.
        pool = SimpleNamespace(
            closed=False, workers=2, settings=PoolSettings(workers=2), command=["custom"],
            name="custom", invoker_pool=inner, active_batch=None, last_batch=None,
            cwd=None, factory=SimpleNamespace(env=None),  # recorded in the batch's config
        )
        inputs = [b"!raise" if i % 5 == 0 else b"in %d" % i for i in range(40)]
        factory.fail = OSError(11, "Resource temporarily unavailable")
        factory.every = 3
        batch = run_batch(pool, inputs, progress=False)  # type: ignore[arg-type]
        df = batch.df
        assert len(df) == 40 and not batch.interrupted
        failed = df[df["outcome"] != "ok"]
        assert list(failed.index) == list(range(0, 40, 5))
        assert set(failed["error"].str.split(":").str[0]) == {"InvocationError"}
        assert (df.loc[df["outcome"] == "ok", "data"] == [i for i in inputs if i != b"!raise"]).all()
        assert supervisor_alive(inner)
        factory.fail = None
        assert inner.invoke(Input(b"after")).data == b"after"
