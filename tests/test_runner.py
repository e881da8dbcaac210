"""The seams between the front-ends and the pools: the ``Runner`` protocol (``Pool``
here, ``DaskPool`` in test_dask), the one settings record and its translation to the
Go-style config, and the batch runner's narrow interface to an ``InvokerPool``."""

from __future__ import annotations

import inspect
import threading
import time

import pytest
from conftest import TEST_HANDLERS

from fnrun_nb import HandlerCrashed, InvokerPoolConfig, Pool, WorkerState
from fnrun_nb.batch.runner import CallTarget
from fnrun_nb.cli import _parser
from fnrun_nb.invoker import CmdInvokerFactory
from fnrun_nb.pool import CallNotStarted
from fnrun_nb.settings import DEFAULTS, PoolSettings

from _runner_check import assert_is_runner

SLEEPY = str(TEST_HANDLERS / "sleepy.py")


def test_pool_is_a_runner(echo_handler: str) -> None:
    with Pool(echo_handler, workers=2, timeout=7.0, max_wait=3.0) as pool:
        assert_is_runner(pool, PoolSettings(workers=2, timeout=7.0, max_wait=3.0))
    assert pool.closed


def test_settings_translate_to_the_go_config_in_one_place(echo_handler: str) -> None:
    settings = PoolSettings(workers=3, timeout=2.5, max_wait=0.5, max_calls_per_worker=9)
    factory = CmdInvokerFactory(echo_handler)
    assert settings.invoker_pool_config(factory) == InvokerPoolConfig(
        max_invokers=3, factory=factory, max_wait=0.5, max_runnable_time=2.5,
        max_calls_per_worker=9,
    )
    with Pool(echo_handler, **settings.as_dict()) as pool:
        assert pool.settings == settings
        assert pool.config == settings.invoker_pool_config(pool.factory)
    # A bad value raises the config's own error, whichever front-end passed it.
    with pytest.raises(ValueError, match="max_invokers must be an int >= 1"):
        Pool(echo_handler, workers=0)


def test_defaults_are_named_once() -> None:
    assert DEFAULTS == PoolSettings(workers=4, timeout=30.0, max_wait=5.0)
    params = inspect.signature(Pool).parameters
    for name, value in DEFAULTS.as_dict().items():
        assert params[name].default == value, name
    run = _parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    args = run.parse_args(["h.py"])
    assert (args.workers, args.timeout, args.max_wait) == (
        DEFAULTS.workers, DEFAULTS.timeout, DEFAULTS.max_wait
    )


def test_replace_keeps_what_is_not_given_and_changes_lists_differences() -> None:
    base = PoolSettings(workers=2, timeout=10.0)
    assert base.replace(workers=None, max_wait=1.0) == PoolSettings(2, 10.0, 1.0)
    assert base.changes(base.replace(workers=8, timeout=10.0)) == [("workers", 2, 8)]
    assert base.changes(base) == []
    with pytest.raises(TypeError):
        base.replace(wait=1.0)  # the front-ends' names only: ``max_wait``
    assert PoolSettings.names() == (
        "workers", "timeout", "max_wait", "max_calls_per_worker", "max_rss_mib", "resources",
        "handler_timing", "protocol",
    )


def test_the_invoker_pool_is_the_batch_runners_call_target() -> None:
    class Gate:
        stop = False

    with Pool(SLEEPY, workers=1, timeout=10) as pool:
        target: CallTarget = pool.invoker_pool
        assert target.call(b"0", b"").data == b"0"
        # A stopped gate: the call does not start, nothing is sent.
        stopped = Gate()
        stopped.stop = True
        with pytest.raises(CallNotStarted):
            target.call(b"crash", b"", None, stopped)
        assert pool.snapshot().calls == 1
        assert target.kill_busy() == 0  # no call in flight

        # The runner's Ctrl-C: stop the gate, then kill the calls in flight.  The slow
        # call ends now, not at its deadline: killed mid-call (crashed) or, if its
        # input was not sent yet, not started (it is not retried on a fresh worker).
        gate = Gate()
        ended: list[tuple[type[BaseException], float]] = []

        def slow() -> None:
            t0 = time.monotonic()
            try:
                target.call(b"30", b"", None, gate)
            except (HandlerCrashed, CallNotStarted) as exc:
                ended.append((type(exc), time.monotonic() - t0))

        t = threading.Thread(target=slow)
        t.start()
        killed = 0
        deadline = time.monotonic() + 5
        while not killed and time.monotonic() < deadline:
            if pool.snapshot().count(WorkerState.BUSY):
                gate.stop = True
                killed = target.kill_busy()
            time.sleep(0.001)
        t.join(10)
        assert killed == 1
        assert len(ended) == 1 and ended[0][1] < 5, ended
        # Its worker is replaced; the pool goes on.
        assert pool.invoke(b"0").data == b"0"
