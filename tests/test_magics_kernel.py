"""``%%fnrun`` through a real Jupyter kernel (jupyter_client + ipykernel), as a notebook
sees it: the messages a frontend receives, a kernel interrupt (which signals the whole
kernel process group), kernel restart and shutdown.

One kernel serves the module.  Its handler processes are the kernel's children, not
this process's, so the module checks them itself: after each test every pool is
stopped and the kernel must have no child left; restart and shutdown must end every
handler process.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client import KernelManager
from _magic_client import UNHEX_HANDLER, wait_for_file, wait_gone
from conftest import HANDLERS, ROOT, TEST_HANDLERS

pytestmark = [
    # The kernel is this module's long-lived child by design; `clean_kernel` and the
    # fixture's shutdown check its processes instead.
    pytest.mark.allow_leaks,
    pytest.mark.timeout(120),
]

ECHO = os.path.relpath(HANDLERS / "echo.py", ROOT)
MAGIC = os.path.relpath(TEST_HANDLERS / "magic_handler.py", ROOT)
DELAY = os.path.relpath(TEST_HANDLERS / "delay.py", ROOT)
# The one pool of the kernel's magics, as code run in the kernel.
THE_POOL = "[e] = get_ipython().magics_manager.registry['FnrunMagics'].entries()\npool = e.pool\n"


class Kernel:
    """A started kernel and its blocking client."""

    def __init__(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(ROOT))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def children(self) -> list[int]:
        """The kernel's handler processes (its descendants but the pools' watchdog)."""
        try:
            procs = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in procs:
            try:
                if "fnrun-watchdog" not in p.cmdline():
                    out.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def send(self, code: str) -> str:
        return str(self.kc.execute(code, store_history=True))

    def collect(self, msg_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Every iopub message of one execution, until the kernel is idle again."""
        outputs: list[dict[str, Any]] = []
        stdout, stderr = [], []
        error = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no idle status within {timeout} s") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind == "stream":
                (stdout if content["name"] == "stdout" else stderr).append(content["text"])
            elif kind in ("execute_result", "display_data"):
                outputs.append({"kind": kind, "data": content["data"]})
            elif kind == "error":
                error = content
        while True:  # the execute_reply of this request (skip any stale reply)
            reply = self.kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        return {
            "status": reply["content"]["status"],
            "outputs": outputs,
            "stdout": "".join(stdout),
            "stderr": "".join(stderr),
            "error": error,
        }

    def run(self, code: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.collect(self.send(code), timeout)

    def ok(self, code: str, timeout: float = 60.0) -> dict[str, Any]:
        reply = self.run(code, timeout)
        if reply["status"] != "ok" or reply["error"] is not None:
            raise AssertionError(f"cell failed: {reply}")
        return reply

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    try:
        k.ok("%load_ext fnrun_nb")
        assert k.ok("import sys; print(sys.executable)")["stdout"].strip() == sys.executable
        yield k
    finally:
        # Kernel shutdown with pools still open must leave no process.
        try:
            k.ok(f"%%fnrun {ECHO} -w 2\nlast")
            pids = k.children()
        finally:
            k.shutdown()
    assert len(pids) == 2
    assert wait_gone(pids) == [], "a handler process outlived the kernel's shutdown"


@pytest.fixture(autouse=True)
def clean_kernel(kernel: Kernel):
    yield
    kernel.ok("%fnrun stop all")
    deadline = time.monotonic() + 10
    while kernel.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kernel.children() == [], "a handler process outlived %fnrun stop all"


def test_result_display_is_what_a_notebook_shows(kernel: Kernel) -> None:
    reply = kernel.ok(f"%%fnrun {ECHO} -e K=v -o r\nhello notebook\n")
    [out] = reply["outputs"]  # one output, from the displayhook
    assert out["kind"] == "execute_result"
    plain, html = out["data"]["text/plain"], out["data"]["text/html"]
    assert plain.startswith("status 200 · 14 bytes\nhello notebook\nenv:\n  K = v\n")
    assert '<div class="fnrun-result">' in html and "<pre" in html and "<code>K</code>" in html
    assert reply["stdout"] == "" and reply["stderr"] == ""


def test_pool_reused_across_cells_and_quiet(kernel: Kernel) -> None:
    kernel.ok(f"%%fnrun {MAGIC} -w 1 -o a\npid")
    reply = kernel.ok(f"%%fnrun {MAGIC} -q -o b\npid")
    assert reply["outputs"] == [] and reply["stdout"] == ""
    reply = kernel.ok(f"%%fnrun {MAGIC} -o c\npid;")
    assert reply["outputs"] == []
    # the trailing ";" silences the display; the body is still sent as typed
    assert kernel.ok("print(a.data == b.data, c.data, a.data.decode() == str(a.info.pid))")[
        "stdout"
    ] == "True b'pid;' True\n"
    assert len(kernel.children()) == 1


def test_usage_error_in_a_kernel(kernel: Kernel) -> None:
    reply = kernel.run(f"%%fnrun {ECHO} -w 0\nx")
    # IPython shows a UsageError as one line on stderr, with no traceback output
    assert reply["status"] == "error" and reply["error"] is None
    assert reply["stderr"] == "UsageError: -w/--workers must be at least 1, got 0\n"
    assert reply["outputs"] == [] and len(kernel.children()) == 0


def test_crash_is_shown_concisely_in_a_kernel(kernel: Kernel) -> None:
    reply = kernel.run(f"%%fnrun {MAGIC} -w 1\ncrash")
    assert reply["status"] == "error"
    err = reply["error"]
    assert err["ename"] == "CallFailed"
    tb = err["traceback"]
    assert tb[0].startswith("HandlerCrashed: handler process ") and "(exit code 3)" in tb[0]
    assert "    magic_handler: crashing on purpose" in tb
    assert len(tb) < 12 and not any("Traceback" in ln or "site-packages" in ln for ln in tb)
    kernel.ok(f"%%fnrun {MAGIC}\nafter the crash")


def test_options_line_magic_and_batch_display_in_a_kernel(kernel: Kernel) -> None:
    # $var and {expr} expansion, -e KEY=VALUE and -e @mapping (a later key wins)
    kernel.ok(f"h = {MAGIC!r}\nhdrs = {{'B': 'from-mapping', 'C': '3'}}\nn = 2")
    reply = kernel.ok("%%fnrun $h -w 1 -e A=1 -e @hdrs -e C=last -e E={n*21} -o r\nstderr to the log")
    [out] = reply["outputs"]
    assert out["data"]["text/plain"].startswith(
        "status 200 · 2 bytes\nok\nenv:\n  A = 1\n  B = from-mapping\n  C = last\n  E = 42\n"
    )
    # %fnrun pools / stderr / restart
    table = kernel.ok("%fnrun pools")["outputs"][0]["data"]
    assert table["text/plain"].splitlines()[1].split()[:4] == [MAGIC, "1", "1", "0"]
    assert "<table" in table["text/html"]
    [view] = kernel.ok("%fnrun stderr $h")["outputs"]
    assert view["data"]["text/plain"] == f"stderr of {MAGIC}:\n--- worker 0\nto the log"
    assert "<pre" in view["data"]["text/html"]
    reply = kernel.ok("%fnrun restart magic_handler.py")
    assert reply["stdout"].startswith(f"fnrun: restarted the pool of {MAGIC} (pids ")
    kernel.ok(f"%%fnrun {MAGIC} -o p\npid")
    assert kernel.ok("print(int(p.data) != r.info.pid)")["stdout"] == "True\n"  # -w 1: a new process
    # a quoted command line with an argument: the argument reaches the handler
    reply = kernel.ok(f'%%fnrun "{DELAY} 0.02" -w 1 -o d\nslow')
    assert kernel.ok("print(d.data, d.info.service >= 0.02)")["stdout"] == "b'slow' True\n"
    # --json: a value, then a list (a batch, shown as its summary with its decoded values)
    reply = kernel.ok(f'%%fnrun {ECHO} -w 2 --json -o j\n{{"x": [1, 2]}}')
    assert '"x": [\n    1,\n    2\n  ]' in reply["outputs"][0]["data"]["text/plain"]
    reply = kernel.ok(f'%%fnrun {ECHO} --json -o jb\n["hi", 3]')
    [out] = reply["outputs"]
    assert out["kind"] == "execute_result"
    plain, html = out["data"]["text/plain"], out["data"]["text/html"]
    assert plain.startswith(f"2 calls of {ECHO}: ") and "\noutcome  ok 2\n" in plain
    assert plain.endswith("batch.df: 2 rows × 25 columns\nbatch.values: 2 of 2 results decoded as JSON")
    assert html.startswith('<div class="fnrun-summary">') and "<table>" in html
    assert f"2 calls of {ECHO}" in html and "<code>batch.values</code>" in html
    assert kernel.ok("print(j.value, list(jb.df['data']), list(jb.values))")["stdout"] == (
        "{'x': [1, 2]} [b'\"hi\"', b'3'] ['hi', 3]\n"
    )
    # --rate: 4 open-loop arrivals 50 ms apart
    kernel.ok(f"%%fnrun {ECHO} -r 4 --rate 20 -q -o rb\nx")
    assert kernel.ok(
        "print(rb.config['rate'], list(rb.df['scheduled'].diff().dt.total_seconds().round(3))[1:],"
        " rb.wall_s >= 0.15)"
    )["stdout"] == "20.0 [0.05, 0.05, 0.05] True\n"


def test_limits_restarts_and_binary_data_in_a_kernel(kernel: Kernel, tmp_path: Path) -> None:
    handler = tmp_path / "unhex.py"
    handler.write_text(UNHEX_HANDLER)
    # a binary result is shown as a hex preview
    reply = kernel.ok(f"%%fnrun {handler} -w 1 -o a\nff00fe41")
    [out] = reply["outputs"]
    assert out["data"]["text/plain"].startswith("status 200 · 4 bytes (binary)\nff 00 fe 41\n")
    assert ">ff 00 fe 41</pre>" in out["data"]["text/html"]
    # editing the handler restarts its pool, said in one line
    handler.write_text(UNHEX_HANDLER.replace("STATUS = 200", "STATUS = 201"))
    reply = kernel.ok(f"%%fnrun {handler} -o b\n41")
    [note] = reply["stdout"].splitlines()
    assert note.startswith(f"fnrun: restarted the pool of {handler}: unhex.py changed on disk (pids ")
    assert kernel.ok("print(b.status, b.info.pid != a.info.pid)")["stdout"] == "201 True\n"
    assert kernel.ok("%fnrun stop unhex.py")["stdout"] == f"fnrun: stopped 1 pool: {handler}\n"
    # -t: a call over its timeout fails, concisely
    reply = kernel.run(f"%%fnrun {MAGIC} -w 1 -t 0.5\nsleep 30", timeout=30)
    assert reply["error"]["ename"] == "CallFailed"
    assert reply["error"]["traceback"][0].startswith("InvocationTimeout: call exceeded its 0.5 s timeout; ")
    # a settings change restarts the pool, in one line; options left out are kept
    reply = kernel.ok(f"%%fnrun {MAGIC} -t 30 --wait 0.3 -o p\npid")
    [note] = reply["stdout"].splitlines()
    assert note.startswith(
        f"fnrun: restarted the pool of {MAGIC}: new settings: -t 0.5 -> 30, --wait 5 -> 0.3 (pids "
    )
    settings = THE_POOL + "print(pool.workers, pool.timeout, pool.config.max_wait)"
    assert kernel.ok(settings)["stdout"] == "1 30.0 0.3\n"
    # --wait: with the one worker busy, a cell waits 0.3 s for it, then fails
    mark = tmp_path / "running"
    kernel.ok(THE_POOL + f"busy = pool.submit({f'mark {mark} 2'!r})")
    wait_for_file(mark)
    reply = kernel.run(f"%%fnrun {MAGIC}\nx")
    assert reply["error"]["ename"] == "CallFailed"
    assert reply["error"]["traceback"][0] == (
        "AvailabilityTimeout: could not get access to invoker before timeout"
    )
    assert kernel.ok("print(busy.result(10).data)")["stdout"] == "b'marked'\n"
    assert kernel.ok(settings)["stdout"] == "1 30.0 0.3\n"  # no restart by the cells above
    # --restart: a new process, said in one line
    reply = kernel.ok(f"%%fnrun {MAGIC} --restart -o q\npid")
    [note] = reply["stdout"].splitlines()
    assert note.startswith(f"fnrun: restarted the pool of {MAGIC}: restarted as asked (--restart) (pids ")
    assert kernel.ok("print(p.data != q.data)")["stdout"] == "True\n"


def test_monitor_is_a_widget_in_a_kernel(kernel: Kernel) -> None:
    reply = kernel.ok(f"%%fnrun {ECHO} -w 2 -r 20 --monitor -o b\nx")
    kinds = [o["kind"] for o in reply["outputs"]]
    assert kinds == ["display_data", "execute_result"]
    assert "application/vnd.jupyter.widget-view+json" in reply["outputs"][0]["data"]
    reply = kernel.ok(f"%fnrun monitor {ECHO}")
    [out] = reply["outputs"]
    assert "application/vnd.jupyter.widget-view+json" in out["data"]
    assert out["data"]["text/plain"].startswith("fnrun echo.py: 2 workers")


def test_interrupt_during_a_long_call_leaves_kernel_and_pool_healthy(
    kernel: Kernel, tmp_path: Path
) -> None:
    kernel.ok(f"%%fnrun {MAGIC} -w 2 -o before\npid")
    mark = tmp_path / "running"
    msg_id = kernel.send(f"%%fnrun {MAGIC}\nmark {mark} 60")
    wait_for_file(mark)
    time.sleep(0.3)
    kernel.km.interrupt_kernel()
    reply = kernel.collect(msg_id, timeout=30)
    assert reply["status"] == "error" and reply["error"]["ename"] == "KeyboardInterrupt"
    # The other handler was in the kernel's process group's reach but in its own
    # session: it did not see the Ctrl-C and still serves, with the same pid.
    assert psutil.pid_exists(int(kernel.ok("print(before.data.decode())")["stdout"]))
    reply = kernel.ok(f"%%fnrun {MAGIC} --lines -o after\npid\npid\npid\npid")
    out = kernel.ok(
        "print((after.df['outcome'] == 'ok').all(), int(before.data) in set(map(int, after.df['data'])))"
    )["stdout"]
    assert out == "True True\n"
    assert len(kernel.children()) == 2


def test_interrupt_in_a_batch_stores_the_partial_batch(kernel: Kernel, tmp_path: Path) -> None:
    mark = tmp_path / "running"
    body = f"mark {mark} 0\n" + "sleep 0.25\n" * 39
    msg_id = kernel.send(f"%%fnrun {MAGIC} -w 2 --lines -o part\n{body}")
    wait_for_file(mark)
    time.sleep(1.0)  # a few calls finish; most are still to come
    kernel.km.interrupt_kernel()
    reply = kernel.collect(msg_id, timeout=30)
    assert reply["error"]["ename"] == "KeyboardInterrupt"
    out = kernel.ok(
        "print(part.interrupted, len(part), (part.df['outcome'] == 'cancelled').any(),"
        " (part.df['outcome'] == 'ok').any())"
    )["stdout"]
    assert out == "True 40 True True\n"
    kernel.ok(f"%%fnrun {MAGIC}\nstill serving")


def test_unload_leaves_no_process(kernel: Kernel) -> None:
    kernel.ok(f"%%fnrun {ECHO} -w 2\nx")
    kernel.ok(f"%%fnrun {MAGIC} -w 1\nx")
    pids = kernel.children()
    assert len(pids) == 3
    kernel.ok("%unload_ext fnrun_nb")
    assert wait_gone(pids) == [] and kernel.children() == []
    kernel.ok("%load_ext fnrun_nb")


def test_kernel_restart_leaves_no_process(kernel: Kernel) -> None:
    kernel.ok(f"%%fnrun {ECHO} -w 2\nx")
    pids = kernel.children()
    assert len(pids) == 2
    kernel.km.restart_kernel(now=False)
    kernel.kc.wait_for_ready(timeout=60)
    assert wait_gone(pids) == []
    kernel.ok("%load_ext fnrun_nb")
