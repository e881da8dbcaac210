"""``%%fnrun --protocol lines|script`` in a real IPython shell, on real handler
processes (one shell process serves the module, as in ``test_magics_shell``)."""

from __future__ import annotations

import os

import pytest
from _magic_client import MagicShell
from _magic_fixtures import clean_shell, shell, usage_error  # noqa: F401 (fixtures)
from conftest import HANDLERS, ROOT, TEST_HANDLERS

SHOUT = os.path.relpath(HANDLERS / "shout.py", ROOT)
SCRIPT = os.path.relpath(TEST_HANDLERS / "script_cases.py", ROOT)
LINES = os.path.relpath(TEST_HANDLERS / "lines_cases.py", ROOT)

pytestmark = [
    # The module's shell process outlives single tests by design; ``clean_shell``
    # checks the shell's own children instead.
    pytest.mark.allow_leaks,
    pytest.mark.timeout(120),
]


# --- %%fnrun ---------------------------------------------------------------------------


def test_magic_protocol_lines_and_script_run_the_same_handler(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun '{SHOUT} lines' --protocol lines -w 1 -o a\nhello\n")
    assert shell.out("print(a.status, a.data)") == "200 b'HELLO'\n"
    shell.ok(f"%%fnrun '{SHOUT} script' --protocol script -w 2 --lines -o b\none\ntwo\nthree\n")
    assert shell.out(
        "print(b.df['data'].tolist(), b.df['cold'].all(), b.df['exit_code'].tolist(),"
        " b.config['protocol'])"
    ) == "[b'ONE', b'TWO', b'THREE'] True [0, 0, 0] script\n"
    shell.ok(f"%%fnrun '{SHOUT}' -w 1 -o c\nhello\n")
    assert shell.out("print(c.data)") == "b'HELLO'\n"


def test_magic_script_exit_code_is_the_status(shell: MagicShell) -> None:
    reply = shell.ok(f"%%fnrun {SCRIPT} --protocol script -w 1 -o r\nexit:4")
    text = reply["outputs"][0]["data"]["text/plain"]
    assert text.startswith("status 4 · 3 bytes\nbye\n")
    assert "FNRUN_NB_EXIT_CODE = 4" in text and "failing 4" in text


def test_magic_lines_refuses_env_timing_and_newlines_before_any_call(shell: MagicShell) -> None:
    msg = usage_error(shell.run(f"%%fnrun {LINES} --protocol lines -e A=1\nx"))
    assert "cannot send a per-call env" in msg
    msg = usage_error(shell.run(f"%%fnrun {LINES} --protocol lines --handler-timing\nx"))
    assert "--handler-timing" in msg and "handler timing" in msg
    msg = usage_error(shell.run(f"%%fnrun {LINES} --protocol lines\ntwo\nlines"))
    assert "newline at byte 3" in msg
    assert shell.children() == []  # refused before a pool was started
    # A kept lines pool, its protocol not given again: still refused, nothing sent.
    shell.ok(f"%%fnrun {LINES} --protocol lines -w 1 -o p\npid")
    pid = shell.out("print(p.data.decode())").strip()
    msg = usage_error(shell.run(f"%%fnrun {LINES} -e A=1\nx"))
    assert "per-call env" in msg
    shell.ok(f"%%fnrun {LINES} -o q\npid")
    assert shell.out("print(q.data.decode())").strip() == pid  # the same process
    # A new protocol restarts the pool, and the note says so (a line handler does not
    # speak fnrun's frames: that call is a protocol error, reported as such).
    reply = shell.run(f"%%fnrun {LINES} --protocol fnrun -t 2\npid")
    assert "new settings: -t 30 -> 2, --protocol lines -> fnrun" in reply["stdout"]
    assert not reply["ok"] and "ProtocolError" in reply["error"]["message"]


def test_magic_protocol_is_checked_by_argparse(shell: MagicShell) -> None:
    reply = shell.run(f"%%fnrun {LINES} --protocol grpc\nx")
    assert not reply["ok"]
    assert "invalid choice: 'grpc'" in reply["error"]["message"] + reply["stderr"]
