"""Every fault of the fault-injecting handler, one call at a time: the named error (or
the right answer), a replaced worker, and nothing left behind.  Then the two ways a
worker dies outside a call (EPIPE while the host writes, death while idle)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid

import pytest
from _procs import gone
from conftest import TEST_HANDLERS

from fnrun_nb import Pool
from fnrun_nb.invoker import CmdInvoker
from fnrun_nb.errors import (
    FnrunError,
    HandlerCrashed,
    InvocationError,
    InvocationTimeout,
    ProtocolError,
)
from handlers.faulty import FAULTS, Fault, command, expected_data, wait_gone

STRAY = [sys.executable, str(TEST_HANDLERS / "stray_stdout.py")]

# The error each failing batch outcome comes from (the batch layer maps them back).
OUTCOME_ERRORS: dict[str, type[InvocationError]] = {
    "crashed": HandlerCrashed,
    "timeout": InvocationTimeout,
    "protocol_error": ProtocolError,
}


@pytest.fixture
def token() -> str:
    return f"faulty-{uuid.uuid4().hex[:12]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
def test_fault_gives_its_outcome_and_a_replaced_worker(fault: Fault, token: str) -> None:
    # 2.5 s: room for the 1 s exit wait after close_stdout on a loaded machine.
    with Pool(command(token), workers=1, timeout=2.5, max_wait=10) as pool:
        before = pool.snapshot().workers[0]
        if fault.outcome == "ok":
            result = pool.invoke(fault.input)
            assert result.status == 200
            assert result.data == expected_data(fault)
            after = pool.snapshot().workers[0]
            assert (after.pid, after.generation) == (before.pid, 1), "an ok call kept its worker"
            if fault.kind == "grandchild":
                # The grandchild outlives the call, holding the pipes, until the close.
                assert not gone(int(result.env["grandchild"]), within=0.2)
        else:
            with pytest.raises(OUTCOME_ERRORS[fault.outcome]) as caught:
                pool.invoke(fault.input)
            err = caught.value
            assert err.info is not None and err.info.pid == before.pid
            if fault.outcome == "crashed":
                assert isinstance(err, HandlerCrashed)
                assert fault.exit_code is not None
                if fault.exit_code >= 0:
                    assert (err.exit_code, err.signal) == (fault.exit_code, None)
                else:
                    assert (err.exit_code, err.signal) == (None, signal.Signals(-fault.exit_code))
            assert gone(before.pid), f"the failed process {before.pid} is still running"
            # The slot is refilled by a new process that works.
            assert pool.invoke(b"after").data == b"after"
            after = pool.snapshot().workers[0]
            assert after.generation == 2 and after.pid != before.pid
        if fault.kind == "flood_stderr":
            assert pool.stderr()[0].endswith("e\n")
    assert wait_gone(token) == [], "a process of the pool outlived close()"


def test_invalid_utf8_in_result_env_is_a_named_protocol_error(token: str) -> None:
    """The host refuses a Result whose env value is not UTF-8 (proto3 strings must be),
    and says so, instead of passing mojibake or raising UnicodeDecodeError."""
    with Pool(command(token), workers=1, timeout=5) as pool:
        with pytest.raises(ProtocolError, match="malformed Result message.*UTF-8"):
            pool.invoke(FAULTS["invalid_utf8_env"].input)


def test_epipe_while_the_host_writes(token: str) -> None:
    """The handler takes 4 bytes of a 1 MiB input and exits: the host's write fails
    with EPIPE.  That is a crash of a call that reached the process (not retried)."""
    with Pool(command(token), workers=1, timeout=10) as pool:
        first = pool.snapshot().workers[0]
        assert pool.invoke(b"!epipe_next").data == b"armed"
        with pytest.raises(HandlerCrashed, match="exit code 3") as caught:
            pool.invoke(b"x" * (1 << 20))
        assert isinstance(caught.value.__cause__, BrokenPipeError)
        assert caught.value.exit_code == 3
        assert pool.invoke(b"next").data == b"next"
        after = pool.snapshot().workers[0]
        assert after.generation == 2 and after.pid != first.pid
        assert pool.snapshot().failures == 1


def test_sigstop_past_the_deadline_is_a_timeout(token: str) -> None:
    with Pool(command(token), workers=1, timeout=0.5) as pool:
        pid = pool.snapshot().workers[0].pid
        assert pid is not None
        with pytest.raises(InvocationTimeout, match="exceeded its 0.5 s timeout"):
            pool.invoke(b"!sigstop")
        assert gone(pid)
        assert pool.invoke(b"ok").data == b"ok"
        assert pool.snapshot().workers[0].generation == 2


def test_deadline_while_the_host_waits_to_see_how_a_call_ended_is_a_timeout(token: str) -> None:
    """After EOF on stdout the host waits up to 1 s for the process to end; when the
    deadline kills it meanwhile, the call timed out (not "crashed: killed by SIGKILL")."""
    with Pool(command(token), workers=1, timeout=0.4) as pool:
        with pytest.raises(InvocationTimeout, match="exceeded its 0.4 s timeout"):
            pool.invoke(FAULTS["close_stdout"].input)
        assert pool.invoke(b"ok").data == b"ok"


@pytest.mark.timeout(90)
def test_worker_that_exits_after_every_answer_fails_no_call(token: str) -> None:
    """Each process serves one call and exits: every later call finds its worker dead
    while idle.  Under concurrent load, every call still succeeds."""
    calls = 60
    with Pool(
        command(token), workers=3, timeout=10, max_wait=30,
        process_env={**os.environ, "FAULTY_EXIT_AFTER_ANSWER": "1"},
    ) as pool:
        errors: list[BaseException] = []
        answers: dict[int, bytes] = {}
        todo = iter(range(calls))
        lock = threading.Lock()

        def run() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    answers[i] = pool.invoke(f"call {i}".encode()).data
                except FnrunError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(80)
        assert errors == []
        assert answers == {i: f"call {i}".encode() for i in range(calls)}
        snap = pool.snapshot()
        assert snap.failures == 0
        assert snap.replacements >= calls - 3  # every process served exactly one call


@pytest.mark.parametrize("warm", [True, False], ids=["after-calls", "fresh"])
def test_sigkill_to_idle_workers_fails_no_call(token: str, warm: bool) -> None:
    """SIGKILL (an OOM kill) to idle workers; as soon as they are dead, calls, racing
    the pool's exit watcher: the dead workers are skipped or the call retried, never
    failed, and no slot is lost.  ``fresh``: workers that never served a call (their
    death is not a start failure)."""
    with Pool(command(token), workers=3, timeout=10, max_wait=20) as pool:
        for round_ in range(4):
            if warm:
                for i in range(6):
                    pool.invoke(f"warm {i}".encode())
            pids = [w.pid for w in pool.snapshot().workers]
            for pid in pids:
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            # Dead, not dying: a call written while SIGKILL is still pending can be
            # read by the process before it dies, which is a crash of that call.
            assert all(gone(pid) for pid in pids if pid is not None)
            for i in range(9):
                data = f"round {round_} call {i}".encode()
                assert pool.invoke(data).data == data
            now = [w.pid for w in pool.snapshot().workers]
            assert not set(now) & set(pids)
        assert pool.snapshot().failures == 0


def test_result_written_between_calls_is_never_the_next_answer() -> None:
    """A handler writes a second Result after its answer: the next call is not
    answered with it.  That call fails as a ProtocolError quoting the stray frame
    (the violation is reported, not hidden by a silent retry), the worker is replaced,
    and the call after it is answered by the fresh process."""
    with Pool(STRAY, workers=1, timeout=5) as pool:
        first = pool.snapshot().workers[0]
        assert first.pid is not None
        assert pool.invoke(b"extra").data == b"extra"
        end = time.monotonic() + 10
        while "stray written" not in pool.stderr()[0]:
            assert time.monotonic() < end, "the handler never wrote its second Result"
            time.sleep(0.01)
        with pytest.raises(ProtocolError, match="EXTRA for extra") as caught:
            pool.invoke(b"two")
        assert getattr(caught.value, "delivered", None) is False
        assert gone(first.pid)
        assert pool.invoke(b"three").data == b"three"
        after = pool.snapshot()
        assert after.workers[0].generation == 2 and after.workers[0].pid != first.pid
        assert after.failures == 1


def test_text_then_exit_between_calls_fails_no_call() -> None:
    """After answering, the handler prints a line and exits.  However the next call
    meets that (the exit already seen, the text found before writing, or the text read
    in place of its answer from a process that never read the call), it is not
    failed: it goes to a fresh worker."""
    with Pool(STRAY, workers=1, timeout=5, max_wait=10) as pool:
        for i in range(4):
            assert pool.invoke(b"text_exit").data == b"text_exit"
            assert pool.invoke(b"after %d" % i).data == b"after %d" % i
        snap = pool.snapshot()
        assert snap.failures == 0
        assert snap.workers[0].generation >= 5



def _stopped(pid: int) -> bool:
    """Wait until ``pid`` is stopped (SIGSTOP took effect); False if it ended."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in "Tt":
            return True
        if state in "ZX":
            return False
        time.sleep(0.001)
    return False


def _holds_no_call_it_read(inv: CmdInvoker) -> bool:
    """For a stopped handler process: True when it cannot have read a call that is
    still unanswered, so killing it now loses nothing it read.  Either no call is in
    flight (``deadline`` is set before the input is written, cleared after the
    answer), or the call's input still sits, whole, in its stdin pipe."""
    if inv.deadline == float("inf"):
        return True
    return inv._unread_stdin() > 0


def test_sigkill_storms_on_idle_and_freshly_taken_workers_fail_no_call() -> None:
    """The watcher's retirement of a worker that died idle races callers taking it:
    only one of them may own it.  Callers run without pause while, round after round,
    every worker is stopped; those stopped inside ``read`` (idle, or just handed a
    call they have not read) are killed, the others resumed.  No call fails, every
    answer is right, and the pool never holds more processes than workers."""
    from conftest import HANDLERS

    from _procs import live_running

    workers = 3
    with Pool(str(HANDLERS / "echo.py"), workers=workers, timeout=20, max_wait=30) as pool:
        stop = threading.Event()
        errors: list[BaseException] = []
        wrong: list[bytes] = []
        done = [0]
        lock = threading.Lock()

        def call_forever(n: int) -> None:
            i = 0
            while not stop.is_set():
                data = b"caller %d call %d" % (n, i)
                try:
                    if pool.invoke(data).data != data:
                        wrong.append(data)
                except BaseException as exc:  # noqa: BLE001 - every failure is reported
                    errors.append(exc)
                    return
                with lock:
                    done[0] += 1
                i += 1

        callers = [threading.Thread(target=call_forever, args=(n,)) for n in range(4)]
        for t in callers:
            t.start()
        killed = 0
        most = 0
        try:
            for _ in range(40):
                invokers = [s.invoker for s in pool._pool._slots]
                stopped, victims = [], []
                for inv in invokers:
                    if not isinstance(inv, CmdInvoker):
                        continue
                    try:
                        os.kill(inv.pid, signal.SIGSTOP)
                    except ProcessLookupError:
                        continue
                    if _stopped(inv.pid):
                        stopped.append(inv.pid)
                        if _holds_no_call_it_read(inv):
                            victims.append(inv.pid)
                time.sleep(0.002)  # callers hand calls to the stopped workers
                for pid in victims:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                for pid in stopped:
                    if pid not in victims:
                        os.kill(pid, signal.SIGCONT)
                assert all(gone(pid) for pid in victims)
                most = max(most, len(live_running("echo.py")))
                time.sleep(0.01)
        finally:
            stop.set()
            for t in callers:
                t.join(60)
        assert errors == [] and wrong == []
        assert killed >= 10, killed
        assert done[0] > 0
        assert pool.invoke(b"after the storm").data == b"after the storm"
        assert most <= workers
        snap = pool.snapshot()
        assert snap.failures == 0
        assert snap.replacements >= killed
