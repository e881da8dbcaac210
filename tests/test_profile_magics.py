"""``%%fnrun ... --profile`` and ``%fnrun profile BATCH_NAME [--slowest N]`` in a real
IPython shell (its own process, ``_magic_shell.py``), with the SDK handler
``hot_parts.py``, whose calls spend their time in ``slow_part()`` or ``fast_part()``."""

from __future__ import annotations

import os

import pytest
from _magic_client import MagicShell
from _magic_fixtures import clean_shell, shell, usage_error  # noqa: F401 (fixtures)
from conftest import ROOT, TEST_HANDLERS

from fnrun_nb.magic_profile import parse_profile_line

pytestmark = [
    # The shell process outlives single tests by design; clean_shell checks its children.
    pytest.mark.allow_leaks,
    pytest.mark.timeout(90),
]

HOT = os.path.relpath(TEST_HANDLERS / "hot_parts.py", ROOT)


def test_a_profile_cell_shows_the_profile_and_returns_the_batch(shell: MagicShell) -> None:
    reply = shell.ok(f"%%fnrun {HOT} -w 1 --lines --profile -o b\nslow\nfast\nslow\n")
    assert reply["result_type"] == "Batch"
    profile_out, batch_out = reply["outputs"]
    assert profile_out["kind"] == "display_data"
    assert profile_out["data"]["text/plain"].startswith("Profile of 3 calls (sdk): ")
    html = profile_out["data"]["text/html"]
    assert "<svg" in html and "slow_part" in html
    assert batch_out["kind"] == "execute_result"
    assert shell.out("print(b.profile.top()['function'].iloc[0], b.profile.calls)") == (
        "slow_part 3\n")
    assert shell.out("print(b.df['env_in'].tolist())") == "[{}, {}, {}]\n"
    # One input with --profile is a batch of one.
    assert shell.ok(f"%%fnrun {HOT} -w 1 --profile -q -o one\nslow\n")["outputs"] == []
    assert shell.out("print(type(one).__name__, len(one), one.profile.calls)") == "Batch 1 1\n"


def test_fnrun_profile_reruns_the_slowest_rows_of_a_named_batch(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun {HOT} -w 1 -q\necho\n")  # warm: no row below is a first call
    shell.ok(f"%%fnrun {HOT} -w 1 --lines -q -o b\necho\nslow\necho\nslow\necho\n")
    reply = shell.ok("%fnrun profile b --slowest 2")
    assert reply["result_type"] == "Profile"
    [out] = reply["outputs"]
    assert out["data"]["text/plain"].startswith("Profile of 2 calls (sdk): ")
    assert "<svg" in out["data"]["text/html"]
    shell.ok("p = _")
    assert shell.out("print(p.top()['function'].iloc[0], sorted(p.by_call))") == (
        "slow_part [1, 3]\n")
    # The batch's pool keeps its last batch: the profiling run is not the user's batch.
    assert "profile" not in shell.out("print(list(b.df.columns))")


def test_fnrun_profile_usage_errors(shell: MagicShell) -> None:
    assert "no variable 'nothing'" in usage_error(shell.run("%fnrun profile nothing"))
    shell.ok("x = 3")
    assert "x is a int, not a Batch" in usage_error(shell.run("%fnrun profile x"))
    msg = usage_error(shell.run("%fnrun profile"))
    assert msg.startswith("%fnrun profile BATCH_NAME [--slowest N]: ")
    assert "at least 1" in usage_error(shell.run("%fnrun profile x --slowest 0"))
    assert "profile BATCH_NAME" in shell.out("%fnrun")


def test_parse_profile_line() -> None:
    assert parse_profile_line(["b"]) == ("b", 20)
    assert parse_profile_line(["b", "--slowest", "5"]) == ("b", 5)
