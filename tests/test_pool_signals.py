"""The pool under signals and hard exits, each in a host process of its own so that
pytest itself is never interrupted: Ctrl-C sent to the host's process group (as
Jupyter does), interpreter exit with a pool left open, and a host killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import HANDLERS, TEST_HANDLERS
from _procs import gone

from fnrun_nb import Pool

HOSTS = Path(__file__).resolve().parent / "hosts"


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_host(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout,
        start_new_session=True, stdin=subprocess.DEVNULL,
    )


def test_ctrl_c_while_waiting_and_while_calling() -> None:
    done = run_host(str(HOSTS / "interrupt_host.py"), str(TEST_HANDLERS / "core_probe.py"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # Interrupted while waiting: the pool is untouched, the calls in flight finish.
    assert out["waiting"] == "interrupted"
    assert out["calls_in_flight"] == ["slept", "slept"]
    assert out["after_waiting"] == {"generations": [1, 1], "failures": 0, "calls": 2}
    # Interrupted in a call: that process is killed and replaced, the pool works.
    assert out["calling"] == "interrupted"
    assert out["after_calling"] == {"generations": [1, 2], "replacements": 1}
    assert out["works"] == "again"
    # The SIGINT sent to the host's process group never reached a handler.
    assert set(out["sigints_after_waiting"].values()) == {0}
    assert set(out["sigints_after_calling"].values()) == {0}
    assert len(out["sigints_after_calling"]) == 2
    # Nothing left after close.
    assert out["children_after_close"] == 0
    assert out["threads_after_close"] == []


@pytest.mark.parametrize("mode", ["plain", "fork"])
def test_interpreter_exit_with_a_pool_left_open_leaves_no_process(mode: str) -> None:
    done = run_host(str(HOSTS / "exit_host.py"), str(HANDLERS / "echo.py"), mode)
    out = json.loads(done.stdout.splitlines()[0])
    pids = [p for p in out["pids"] if p is not None] + ([out["child"]] if out["child"] else [])
    try:
        assert done.returncode == 0, done.stderr
        assert len(out["pids"]) == 2
        for pid in pids:
            assert gone(pid), f"process {pid} outlived the interpreter ({mode})"
    finally:
        kill_leftovers(pids)


def test_handlers_die_with_a_host_killed_by_sigkill() -> None:
    host = subprocess.Popen(
        [sys.executable, str(HOSTS / "killed_host.py"), str(TEST_HANDLERS / "faulty.py")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    pids: list[int] = []
    grandchild = 0
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line, host.stderr.read() if host.stderr else ""
        facts = json.loads(line)
        pids, grandchild = facts["pids"], facts["grandchild"]
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in [*pids, grandchild])
        host.kill()
        host.wait(10)
        for pid in pids:
            assert gone(pid), f"handler {pid} outlived its host (PR_SET_PDEATHSIG)"
        # What a handler forked has no death signal: the watchdog kills its group.
        assert gone(grandchild), f"grandchild {grandchild} outlived the host (watchdog)"
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)
        for f in (host.stdout, host.stderr):
            if f is not None:
                f.close()
        kill_leftovers([*pids, grandchild] if grandchild else pids)


def test_the_watchdog_lives_exactly_as_long_as_some_handler(echo_handler: str) -> None:
    from fnrun_nb._watchdog import watchdog

    assert watchdog.pid is None
    with Pool(echo_handler, workers=2) as pool:
        first = watchdog.pid
        assert first is not None and psutil.Process(first).cmdline()[0] == "/bin/sh"
        # Killed from outside, it is replaced at the next spawn, with every group listed.
        os.kill(first, signal.SIGKILL)
        psutil.Process(first).wait(5)
        with Pool(echo_handler, workers=1) as other:
            assert other.invoke(b"x").data == b"x"
            assert watchdog.pid not in (None, first)
        assert pool.invoke(b"y").data == b"y"
    assert watchdog.pid is None  # stopped and reaped with the last handler


def test_the_watchdog_script_kills_only_the_groups_still_listed() -> None:
    from fnrun_nb._watchdog import _SCRIPT

    script = _SCRIPT.replace("kill -KILL", "echo kill")
    done = subprocess.run(
        ["/bin/sh", "-c", script], input="+12\n+2\n+123\n-2\n-99\n+7\n-123\n",
        capture_output=True, text=True, timeout=10,
    )
    assert done.stdout.split("\n") == ["kill -12", "kill -7", ""]


STORM_HOST = """
import json, os, random, signal, sys, threading, time
from fnrun_nb import AvailabilityTimeout, Pool, WorkerState

# SIGINT raises only while a call is "armed": always inside the try below, so a
# signal can land anywhere in the pool's code but never in this harness's own loop
# (a KeyboardInterrupt at the loop's back-edge would end the script, not test it).
armed = False

def on_sigint(signum, frame):
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)
pool = Pool(sys.argv[1], workers=2, timeout=10, max_wait=2)
stop = threading.Event()
busy_calls = 0

def pester():
    # SIGINT to this process every 0.1 to 3 ms: some land as a worker is taken.
    while not stop.is_set():
        time.sleep(random.uniform(0.0001, 0.003))
        os.kill(os.getpid(), signal.SIGINT)

def other_caller():
    # A second caller, so that the main thread also waits for a worker at times.
    global busy_calls
    while not stop.is_set():
        pool.invoke(b"0.002")
        busy_calls += 1

report = {"ok": 0, "interrupts": 0, "lost": False}
pester_thread = threading.Thread(target=pester)
caller = threading.Thread(target=other_caller)
caller.start()
pester_thread.start()
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        armed = True
        pool.invoke(b"0")
        armed = False
        report["ok"] += 1
    except KeyboardInterrupt:
        armed = False
        report["interrupts"] += 1
    except AvailabilityTimeout:
        armed = False
        report["lost"] = True
        break
stop.set()
pester_thread.join()
caller.join()
report["other_calls"] = busy_calls
# Every worker settles idle (an interrupted call's process is being replaced) ...
t_end = time.monotonic() + 20
while not all(w.state is WorkerState.IDLE for w in pool.snapshot().workers):
    if time.monotonic() > t_end:
        break
    time.sleep(0.01)
report["states"] = [w.state.value for w in pool.snapshot().workers]
# ... and both serve: two slow calls at once run on two workers without waiting.
results = []
calls = [threading.Thread(target=lambda: results.append(pool.invoke(b"0.5").info)) for _ in range(2)]
for t in calls:
    t.start()
for t in calls:
    t.join()
report["workers_used"] = sorted(i.worker for i in results)
report["max_wait_s"] = max(i.wait for i in results)
pool.close()
print(json.dumps(report), flush=True)
"""


@pytest.mark.timeout(90)
def test_a_sigint_storm_never_loses_a_worker() -> None:
    """Thousands of real SIGINTs while calls take and give back workers: each lands
    somewhere (waiting, taking, calling, handing back), and the pool keeps both its
    workers: every slot idle afterwards and two concurrent calls on two workers."""
    done = run_host("-c", STORM_HOST, str(TEST_HANDLERS / "sleepy.py"), "5")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["interrupts"] > 500 and out["other_calls"] > 50, out
    assert out["lost"] is False, out
    assert out["states"] == ["idle", "idle"], out
    assert out["workers_used"] == [0, 1] and out["max_wait_s"] < 0.3, out
