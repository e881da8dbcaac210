"""A real Jupyter kernel driven the way a notebook front-end drives it.

::

    this process (the "browser")                    the kernel (ipykernel, own process)
      Kernel.run(code) ── execute_request ──shell──▶  runs the cell; widgets, displays
          ▲                                              │ and comm messages go out on
          └── reads and decodes every iopub message ◀────┘ iopub, from any thread

A widget front-end only costs what it sends if someone receives it: a kernel whose
iopub nobody reads still serializes the messages, but its socket eventually drops
them.  So :meth:`Kernel.run` reads (and signature-checks, through ``jupyter_client``)
every iopub message until the kernel reports the request idle, counting widget state
updates (``comm_msg`` with ``method: "update"``) and widget views displayed, as a
browser would receive them.  Nothing is answered back: a front-end's replies (state
requests, echoes) are not needed for the kernel to keep sending.

The idle status closes a request's tally: ipykernel publishes it after the cell
returned, on the same socket as everything the cell sent, so a message sent by a
thread the cell waited for (``Monitor.stop`` joins its refresher) is counted in that
request, never in the next.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Kernel", "Reply"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class Reply:
    """What one execute request produced, as the front-end received it.

    ``expressions``: each requested user expression's ``text/plain`` value;
    ``updates``: widget state updates received; ``widget_views``: displays carrying a
    widget view; ``messages``: every iopub message of the request (status included).
    """

    expressions: dict[str, str]
    updates: int
    widget_views: int
    messages: int


class Kernel:
    """A Python kernel (the ``python3`` kernelspec, run by this interpreter) started in
    ``cwd``; a context manager that shuts it down.

    Raises ``RuntimeError`` when the kernel does not become ready within
    ``startup_timeout`` seconds.
    """

    def __init__(self, cwd: Path, *, startup_timeout: float = 60.0) -> None:
        from jupyter_client.manager import KernelManager

        self._km = KernelManager(kernel_name="python3")
        self._km.start_kernel(cwd=str(cwd))
        self._kc = self._km.client()
        self._kc.start_channels()
        try:
            self._kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError:
            self.close()
            raise

    def run(
        self, code: str, *, expressions: dict[str, str] | None = None, timeout: float = 300.0
    ) -> Reply:
        """Execute ``code`` as a cell; return once the kernel is idle again.

        Raises ``RuntimeError`` (with the kernel's traceback) when the cell raised or an
        expression failed, ``TimeoutError`` when the request did not finish in time.
        """
        kc = self._kc
        msg_id = kc.execute(
            code, store_history=False, user_expressions=expressions or {}, allow_stdin=False
        )
        deadline = time.monotonic() + timeout
        updates = views = messages = 0
        while True:
            msg = self._next(kc.get_iopub_msg, deadline, code)
            messages += 1
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "comm_msg" and content.get("data", {}).get("method") == "update":
                updates += 1
            elif kind in ("display_data", "update_display_data") and WIDGET_VIEW in content.get(
                "data", {}
            ):
                views += 1
            elif (
                kind == "status"
                and content.get("execution_state") == "idle"
                and msg["parent_header"].get("msg_id") == msg_id
            ):
                break
        while True:
            reply = self._next(kc.get_shell_msg, deadline, code)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content.get("status") != "ok":
            trace = "\n".join(content.get("traceback", []))
            raise RuntimeError(
                f"the kernel raised {content.get('ename')}: {content.get('evalue')}\n{trace}"
            )
        values: dict[str, str] = {}
        for name, value in content.get("user_expressions", {}).items():
            if value.get("status") != "ok":
                raise RuntimeError(
                    f"expression {name!r} raised {value.get('ename')}: {value.get('evalue')}"
                )
            values[name] = value["data"]["text/plain"]
        return Reply(values, updates, views, messages)

    @staticmethod
    def _next(get: Any, deadline: float, code: str) -> dict[str, Any]:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise queue.Empty
            return get(timeout=left)  # type: ignore[no-any-return]
        except queue.Empty:
            raise TimeoutError(f"the kernel did not finish within its timeout: {code!r}") from None

    def close(self) -> None:
        """Stop the channels and shut the kernel down (politely, then by force)."""
        try:
            self._kc.stop_channels()
        finally:
            self._km.shutdown_kernel(now=False)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
