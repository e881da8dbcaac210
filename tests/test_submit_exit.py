"""Interpreter exit with a backlog of ``Pool.submit`` calls: the queued calls are
cancelled, not run one after another before the process may exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import TEST_HANDLERS

HANDLER = '''
import os
import time
from fnrun_nb.handler import serve

def handle(data, ctx):
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write("call\\n")
    time.sleep(float(data))
    return data

serve(handle)
'''

HOST = '''
import os, sys, time
from fnrun_nb import Pool
pool = Pool([sys.executable, sys.argv[1]], workers=1, timeout=30,
            process_env={"CALL_LOG": sys.argv[2]})
futures = [pool.submit(b"0.5") for _ in range(10)]
deadline = time.monotonic() + 20
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.01)  # until the first call is in flight
print("exiting", flush=True)
'''


def test_exit_cancels_queued_submits_instead_of_running_them(tmp_path: Path) -> None:
    handler = tmp_path / "logging_handler.py"
    handler.write_text(HANDLER)
    log = tmp_path / "calls.log"
    done = subprocess.run(
        [sys.executable, "-c", HOST, str(handler), str(log)],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        cwd=TEST_HANDLERS,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"exiting\n"
    calls = log.read_text().count("call")
    # The call in flight at exit had started; the nine queued behind it never ran.
    assert calls == 1, f"{calls} of 10 submitted calls ran before the interpreter could exit"
