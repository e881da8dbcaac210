"""A real IPython ``InteractiveShell`` in its own process, driven over stdin/stdout.

The magic tests start one per test module (``MagicShell`` in
``tests/test_magics_shell.py``) so that the shell's global state (``sys.displayhook``,
``get_ipython()``) never leaks into the pytest process.  Requests and replies are JSON
lines; a reply reports exactly what a terminal IPython would have shown:

    {"cell": SOURCE}  ->  {"ok", "error": {type, module, message, rendered} | null,
                           "stdout", "stderr", "outputs": [{"kind", "data": {mime: text}}],
                           "result_type"}
    {"children": true} -> {"pids": [...], "threads": [...]}

``outputs`` lists every display: ``execute_result`` (the displayhook, once per cell at
most) and ``display_data`` (``display()`` calls), each formatted as a notebook would
receive it (``text/plain``, ``text/html``...).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading

import psutil


def handler_pids(me: psutil.Process) -> list[int]:
    """The shell's descendants but the pools' watchdog (a /bin/sh that lives exactly as
    long as some handler does)."""
    out = []
    for p in me.children(recursive=True):
        try:
            if "fnrun-watchdog" not in p.cmdline():
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def main() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="nocolor")
    outputs: list[dict[str, object]] = []

    def formatted(obj: object) -> dict[str, str]:
        data, _ = shell.display_formatter.format(obj)
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}

    hook = shell.displayhook
    original_write = hook.write_format_data

    def write_format_data(format_dict, md_dict=None):  # type: ignore[no-untyped-def]
        outputs.append({"kind": "execute_result", "data": dict(format_dict)})
        return original_write(format_dict, md_dict)

    hook.write_format_data = write_format_data  # type: ignore[method-assign]

    pub = shell.display_pub

    def publish(data, metadata=None, source=None, **kw):  # type: ignore[no-untyped-def]
        outputs.append(
            {"kind": "display_data", "data": {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}}
        )

    pub.publish = publish  # type: ignore[method-assign]

    real_stdout = sys.stdout
    for raw in sys.stdin:
        req = json.loads(raw)
        if "children" in req:
            me = psutil.Process()
            reply = {
                "pids": handler_pids(me),
                "threads": sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()),
            }
        elif "format" in req:
            value = shell.user_ns[req["format"]]
            reply = {"data": formatted(value), "type": type(value).__name__}
        else:
            outputs.clear()
            buf, ebuf = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(ebuf):
                result = shell.run_cell(req["cell"], store_history=True)
            err = result.error_in_exec or result.error_before_exec
            error = None
            if err is not None:
                render = getattr(err, "_render_traceback_", None)
                error = {
                    "type": type(err).__name__,
                    "module": type(err).__module__,
                    "message": str(err),
                    "rendered": "\n".join(render()) if render is not None else None,
                }
            reply = {
                "ok": err is None,
                "error": error,
                "stdout": buf.getvalue(),
                "stderr": ebuf.getvalue(),
                "outputs": list(outputs),
                "result_type": None if result.result is None else type(result.result).__name__,
            }
        real_stdout.write(json.dumps(reply) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    main()
