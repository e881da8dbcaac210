"""``%%fnrun`` / ``%fnrun`` through a real InteractiveShell in a fresh process.

One shell process serves the module (``_magic_shell.py``); each test ends with every
pool stopped and checks that the shell has no child process left, which replaces the
pytest-process leak check (the shell itself is this module's own long-lived child).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from _magic_client import UNHEX_HANDLER, MagicShell, wait_for_file, wait_gone
from _magic_fixtures import clean_shell, shell, usage_error  # noqa: F401 (fixtures)
from conftest import HANDLERS, ROOT, TEST_HANDLERS

pytestmark = [
    # The module's shell process outlives single tests by design; `clean_shell`
    # below checks the shell's own children instead.
    pytest.mark.allow_leaks,
    pytest.mark.timeout(90),
]

ECHO = os.path.relpath(HANDLERS / "echo.py", ROOT)
MAGIC = os.path.relpath(TEST_HANDLERS / "magic_handler.py", ROOT)


# --- one call ---------------------------------------------------------------------------


def test_one_call_returns_the_result_displayed_once(shell: MagicShell) -> None:
    reply = shell.ok(f"%%fnrun {ECHO} -o r\nhello world\n")
    assert reply["result_type"] == "Result"
    [out] = reply["outputs"]  # displayed once, by the displayhook
    assert out["kind"] == "execute_result"
    text = out["data"]["text/plain"]
    assert text.startswith("status 200 · 11 bytes\nhello world\n")
    assert "worker " in text and "pid " in text and " ms service" in text
    html = out["data"]["text/html"]
    assert ">200</span>" in html and "<pre" in html and "hello world" in html
    # one trailing newline is dropped; the rest is sent as typed
    assert shell.out("print(repr(r.data), r.status)") == "b'hello world' 200\n"
    shell.ok(f"%%fnrun {ECHO} -o r2\n  two\n\n")
    assert shell.out("print(repr(r2.data))") == "b'  two\\n'\n"


def test_pool_is_reused_across_cells(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun {ECHO} -w 1 -o a\nfirst")
    reply = shell.ok(f"%%fnrun {ECHO} -w 1 -o b\nsecond")
    assert "restarted" not in reply["stdout"]
    assert shell.out("print(a.info.pid == b.info.pid, b.info.call)") == "True 2\n"
    table = shell.ok("%fnrun pools")["outputs"][0]["data"]
    assert ECHO in table["text/plain"] and "<table" in table["text/html"]
    row = [ln for ln in table["text/plain"].splitlines() if ln.startswith(ECHO)][0]
    assert row.split()[1:4] == ["1", "2", "0"]  # workers, calls, failures


def test_settings_change_restarts_with_one_line(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun {ECHO} -w 1 -o a\nx")
    reply = shell.ok(f"%%fnrun {ECHO} -w 2 -t 7 -o b\nx")
    notes = reply["stdout"].splitlines()
    assert len([n for n in notes if n.startswith("fnrun:")]) == 1
    assert notes[0].startswith(f"fnrun: restarted the pool of {ECHO}: new settings: -w 1 -> 2, -t 30 -> 7")
    assert shell.out("print(a.info.pid != b.info.pid)") == "True\n"
    # options left out keep the pool's settings: no restart, the same processes
    live = (
        "[e] = get_ipython().magics_manager.registry['FnrunMagics'].entries()\n"
        "print(e.pool.workers, e.pool.timeout, e.pool.config.max_wait,"
        " sorted(w.pid for w in e.pool.snapshot().workers))"
    )
    before = shell.out(live)
    assert before.startswith("2 7.0 5.0 [")
    reply = shell.ok(f"%%fnrun {ECHO} -o c\nx")
    assert "restarted" not in reply["stdout"]
    assert shell.out(live) == before
    assert shell.out("print(c.info.pid in (w.pid for w in e.pool.snapshot().workers))") == "True\n"
    reply = shell.ok(f"%%fnrun {ECHO} --wait 0.5\nx")
    assert "new settings: --wait 5 -> 0.5" in reply["stdout"]
    reply = shell.ok(f"%%fnrun {ECHO} --restart\nx")
    assert "restarted as asked (--restart)" in reply["stdout"]


def test_handler_edit_restarts_and_touch_does_not(shell: MagicShell, tmp_path: Path) -> None:
    handler = tmp_path / "h.py"
    shutil.copy(HANDLERS / "echo.py", handler)
    shell.ok(f"%%fnrun {handler} -w 1 -o a\nx")
    os.utime(handler)  # same content, new mtime
    reply = shell.ok(f"%%fnrun {handler} -o b\nx")
    assert "restarted" not in reply["stdout"]
    handler.write_text(handler.read_text().replace("Result(200, data", "Result(201, data"))
    reply = shell.ok(f"%%fnrun {handler} -o c\nx")
    assert reply["stdout"].startswith(f"fnrun: restarted the pool of {handler}: h.py changed on disk")
    assert shell.out("print(a.info.pid == b.info.pid != c.info.pid, c.status)") == "True 201\n"


def test_env_options_and_expansion(shell: MagicShell) -> None:
    shell.ok("extra = {'B': 'from-mapping', 'C': '3'}\nh = " + repr(ECHO) + "\nn = 2")
    shell.ok('%%fnrun $h -e A=1 -e @extra -e C=last -e "D=x y" -e E={n*21} -o r\nbody')
    assert shell.out("print(sorted(r.env.items()))") == (
        "[('A', '1'), ('B', 'from-mapping'), ('C', 'last'), ('D', 'x y'), ('E', '42')]\n"
    )


def test_quiet_and_semicolon_silence_but_still_store(shell: MagicShell) -> None:
    reply = shell.ok(f"%%fnrun {ECHO} -q -o r\nquiet")
    assert reply["outputs"] == [] and reply["stdout"] == "" and reply["result_type"] is None
    reply = shell.ok(f"%%fnrun {ECHO} -o s\nsilenced;")
    assert reply["outputs"] == []
    assert shell.out("print(r.data, s.data)") == "b'quiet' b'silenced;'\n"
    assert shell.ok("%fnrun pools;")["outputs"] == []


def test_usage_errors_are_exact(shell: MagicShell) -> None:
    shell.ok("notamap = [1]")
    cases = {
        "%%fnrun\nx": "the following arguments are required: HANDLER",
        f"%%fnrun {ECHO} -w 0\nx": "-w/--workers must be at least 1, got 0",
        f"%%fnrun {ECHO} -w two\nx": "argument -w/--workers: invalid int value: 'two'",
        f"%%fnrun {ECHO} -t 0\nx": "-t/--timeout must be a positive number of seconds, got 0",
        f"%%fnrun {ECHO} --wait -1\nx": "--wait must be zero or a positive number of seconds, got -1",
        f"%%fnrun {ECHO} -r 0\nx": "-r/--repeat must be at least 1, got 0",
        f"%%fnrun {ECHO} --lines -r 2 --rate 0\nx": "--rate must be a positive number of calls per second, got 0",
        f"%%fnrun {ECHO} --rate 5\nx": "--rate applies to a batch: add --lines, -r/--repeat or a JSON list",
        f"%%fnrun {ECHO} --lines --json\nx": "--lines and --json cannot be combined",
        f"%%fnrun {ECHO} -q --monitor\nx": "-q/--quiet displays nothing; it cannot be combined with --monitor",
        f"%%fnrun {ECHO} --json\n[1, NaN]": "--json: the cell is not valid JSON: NaN is not a JSON value",
        f"%%fnrun {ECHO} --lines\n\n  \n": "--lines: the cell has no non-empty line",
        f"%%fnrun {ECHO} --json\n{{oops": "--json: the cell is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        f"%%fnrun {ECHO} --json\n[]": "--json: the list is empty",
        f"%%fnrun {ECHO} -o 1x\nx": "-o NAME must be a Python identifier, got '1x'",
        f"%%fnrun {ECHO} --max-rss 0\nx": "--max-rss must be a positive number of MiB, got 0",
        f"%%fnrun {ECHO} --max-rss lots\nx": "argument --max-rss: invalid float value: 'lots'",
        f"%%fnrun {ECHO} -e NOEQUALS\nx": "-e/--env expects KEY=VALUE or @NAME, got 'NOEQUALS'",
        f"%%fnrun {ECHO} -e @missing\nx": "-e @missing: no variable 'missing' in the namespace",
        f"%%fnrun {ECHO} -e @notamap\nx": "-e @notamap: expected a mapping of str to str, got list",
        f"%%fnrun {ECHO} --bogus\nx": "unrecognized arguments: --bogus",
        "%%fnrun ./nope.py\nx": "cannot start handler './nope.py': No such file or directory",
        "%%fnrun no-such-program-xyz\nx": "cannot start handler 'no-such-program-xyz': command not found on PATH",
        "%%fnrun 'no-such-program-xyz --fast'\nx": "cannot start handler 'no-such-program-xyz --fast': no-such-program-xyz: command not found on PATH",
        "%fnrun frobnicate": "%fnrun: unknown subcommand 'frobnicate'; expected one of: pools, stop, restart, stderr, monitor, check, replay, fuzz, profile (a call is a cell: %%fnrun HANDLER)",
        "%fnrun pools extra": "%fnrun pools takes no argument",
        "%fnrun restart": "%fnrun restart needs a HANDLER",
        "%fnrun stderr all": "%fnrun stderr needs one HANDLER, not 'all'",
        "%fnrun stop a b": "%fnrun stop: expected at most one HANDLER, got 2 words (quote a command line with arguments)",
        f"%fnrun stderr {ECHO}": f"%fnrun: no live pool for '{ECHO}' (see %fnrun pools)",
    }
    for cell, message in cases.items():
        reply = shell.run(cell)
        assert usage_error(reply) == message, cell
        # shown as one line, without a traceback
        assert reply["stderr"] == f"UsageError: {message}\n"
        assert reply["stdout"] == ""
    assert shell.children() == []  # no usage error started a pool


def test_help_and_usage(shell: MagicShell) -> None:
    text = shell.out("%fnrun")
    assert text.startswith("%fnrun SUBCOMMAND: manage the warm pools of %%fnrun\n")
    for sub in ("pools", "stop", "restart", "stderr", "monitor"):
        assert f"  %fnrun {sub}" in text
    doc = shell.out("%%fnrun?")  # the usage IPython's help shows
    assert "%%fnrun [-w N] [-t SECONDS] [--wait SECONDS] [-e KEY=VALUE] [-r N]" in doc
    for opt in ("--lines", "--json", "--rate R", "--monitor", "-o NAME, --output NAME",
                "--resources", "--handler-timing", "--max-rss MIB",
                "-q, --quiet", "--restart", "-e <KEY=VALUE>, --env <KEY=VALUE>"):
        assert opt in doc, opt
    assert "%fnrun stop [HANDLER|all]" in shell.out("%fnrun?")


# --- profiling options ----------------------------------------------------------------

PROFILED = os.path.relpath(TEST_HANDLERS / "profiled.py", ROOT)
LEAKY = os.path.relpath(TEST_HANDLERS / "leaky_rss.py", ROOT)


def test_resources_and_handler_timing_make_a_batch_with_their_columns(shell: MagicShell) -> None:
    # One input with --resources is a batch of one: the columns are a batch's.
    reply = shell.ok(f"%%fnrun {PROFILED} -w 1 --resources -o one\nbusy:30")
    assert reply["result_type"] == "Batch"
    assert shell.out("print(len(one), one.df['cpu_ms'].iloc[0] > 20, 'handler_ms' in one.df)") == (
        "1 True False\n"
    )
    reply = shell.ok(f"%%fnrun {PROFILED} --lines --handler-timing -o b\nsleep:20\nsleep:20")
    text = reply["outputs"][0]["data"]["text/plain"]
    assert "service  handler " in text and "transport" in text  # the summary's split
    assert shell.out(
        "print(sorted(c for c in ('cpu_ms', 'handler_ms', 'transport_ms') if c in b.df),"
        " bool(b.df['handler_ms'].between(19, 40).all()),"
        " bool((b.df['transport_ms'] > 0).all()),"
        " 'FNRUN_NB_TIMING' in b.df['env_in'].iloc[0])"
    ) == "['handler_ms', 'transport_ms'] True True False\n"
    # Not a pool setting: the same warm process served every cell.
    assert shell.out("print(one.df['pid'].iloc[0] in set(b.df['pid']))") == "True\n"
    # Without the options the columns are absent again.
    shell.ok(f"%%fnrun {PROFILED} --lines -o plain\nx")
    assert shell.out("print([c for c in ('cpu_ms', 'handler_ms') if c in plain.df])") == "[]\n"


def test_max_rss_recycles_a_leaking_worker_and_restarts_once(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun '{LEAKY} 1024' -w 1 -r 10 -q -o before\nx")
    reply = shell.ok(f"%%fnrun '{LEAKY} 1024' -w 1 --max-rss 200 -r 1 -o again\nx")
    assert "new settings: --max-rss none -> 200" in reply["stdout"]
    # 1 MiB a call on a process near 40 MiB: recycled every few dozen calls, never failed.
    shell.ok(f"%%fnrun '{LEAKY} 1024' -w 1 --max-rss 60 -r 120 --resources -o leak\nx")
    assert shell.out(
        "print(leak.df['outcome'].eq('ok').all(), leak.df['generation'].nunique() > 1,"
        " bool(leak.df['rss_mib'].max() < 60 + 1.5))"
    ) == "True True True\n"


# --- failures -----------------------------------------------------------------------------


def test_handler_crash_is_shown_concisely(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun {MAGIC} -w 1 -o first\npid")
    reply = shell.run(f"%%fnrun {MAGIC}\ncrash")
    err = reply["error"]
    assert (err["module"], err["type"]) == ("fnrun_nb.magic_views", "CallFailed")
    shown = reply["stdout"]
    assert shown == err["rendered"] + "\n"
    lines = shown.splitlines()
    assert lines[0].startswith("HandlerCrashed: handler process ")
    assert "(exit code 3)" in lines[0]
    assert lines[1] == f"  handler: {MAGIC}"
    assert "  exit code 3" in lines
    assert "    magic_handler: crashing on purpose" in lines
    assert lines[-1] == "  the pool replaced the process; the next call gets a fresh one"
    assert "Traceback" not in shown and len(lines) < 12
    # the pool is healthy: a fresh process answers
    shell.ok(f"%%fnrun {MAGIC} -o after\npid")
    assert shell.out("print(after.data != first.data, after.info.generation)") == "True 2\n"


def test_timeout_is_shown_concisely(shell: MagicShell) -> None:
    reply = shell.run(f"%%fnrun {MAGIC} -w 1 -t 0.5\nsleep 30")
    assert reply["error"]["type"] == "CallFailed"
    first = reply["stdout"].splitlines()[0]
    assert first.startswith("InvocationTimeout: call exceeded its 0.5 s timeout")


def test_handler_that_cannot_start(shell: MagicShell, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nsys.stderr.write('cannot import things\\n')\nsys.exit(4)\n")
    reply = shell.run(f"%%fnrun {bad} -w 1 --wait 2\nx", timeout=60)
    assert reply["error"]["type"] == "CallFailed"
    lines = reply["stdout"].splitlines()
    # the reason is said once, its stderr shown once, with the command that ran
    assert lines[0] == (
        "HandlerStartError: cannot start the handler: the process ended (exit code 4)"
        " before reading its first input"
    )
    assert lines[1:3] == [f"  handler: {bad}", f"  command: {sys.executable} {bad}"]
    assert lines[-2:] == ["  stderr:", "    cannot import things"]
    assert len(lines) == 6 and lines[3].startswith("  worker 0, pid ")
    assert "Traceback" not in reply["stdout"]
    # a command line whose script is missing: the interpreter's complaint, once
    reply = shell.run(f'%%fnrun "{sys.executable} {tmp_path}/missing.py" -w 1\nx', timeout=60)
    shown = reply["stdout"]
    assert shown.startswith("HandlerStartError: cannot start the handler: the process ended (exit code 2)")
    assert shown.count("missing.py': [Errno 2] No such file or directory") == 1


# --- the line magic -------------------------------------------------------------------------


def test_line_magic_stderr_restart_stop(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun {MAGIC} -w 1 -o a\nstderr hello from the handler")
    # The process watcher drains stderr beside the calls: the line can arrive a moment
    # after the answer, so look again until it is there.
    for _ in range(50):
        reply = shell.ok(f"%fnrun stderr {MAGIC}")
        text = reply["outputs"][0]["data"]["text/plain"]
        if "hello from the handler" in text:
            break
        time.sleep(0.1)
    assert text.startswith(f"stderr of {MAGIC}:\n--- worker 0\n")
    assert "hello from the handler" in text
    assert "<pre" in reply["outputs"][0]["data"]["text/html"]
    # a pool is also found by its file name
    reply = shell.ok("%fnrun restart magic_handler.py")
    assert reply["stdout"].startswith(f"fnrun: restarted the pool of {MAGIC} (pids ")
    shell.ok(f"%%fnrun {MAGIC} -o b\npid")
    assert shell.out("print(a.info.pid != int(b.data))") == "True\n"
    shell.ok(f"%%fnrun {ECHO} -w 1 -o e\nx")
    assert len(shell.children()) == 2
    echo_pid = int(shell.out("print(e.info.pid)"))
    assert shell.out(f"%fnrun stop {ECHO}") == f"fnrun: stopped 1 pool: {ECHO}\n"
    assert wait_gone([echo_pid]) == [] and len(shell.children()) == 1
    assert shell.out("%fnrun stop") == f"fnrun: stopped 1 pool: {MAGIC}\n"
    assert shell.out("%fnrun stop all") == "fnrun: stopped 0 pools: none were running\n"
    assert shell.ok("%fnrun pools")["outputs"][0]["data"]["text/plain"] == "no live fnrun pools"


def test_unload_closes_every_pool_and_reload_works(shell: MagicShell) -> None:
    shell.ok(f"%%fnrun {ECHO} -w 2\nx")
    shell.ok(f"%%fnrun {MAGIC} -w 1\nx")
    pids = shell.children()
    assert len(pids) == 3
    shell.ok("%unload_ext fnrun_nb")
    assert shell.children() == []
    assert wait_gone(pids) == []
    reply = shell.run(f"%%fnrun {ECHO}\nx")
    assert reply["error"]["type"] == "UsageError"  # the magic is gone
    shell.ok("%load_ext fnrun_nb")
    shell.ok(f"%%fnrun {ECHO}\nback")


# --- batches ---------------------------------------------------------------------------------


def test_lines_repeat_and_rate_make_batches(shell: MagicShell) -> None:
    reply = shell.ok(f"%%fnrun {ECHO} -w 2 --lines -e K=v -o b\nalpha\n\n  \nbeta \ngamma\n")
    assert reply["result_type"] == "Batch"
    [out] = reply["outputs"]
    assert out["kind"] == "execute_result" and "text/html" in out["data"]
    assert shell.out(
        "print(len(b), list(b.df['data']), list(b.df['outcome'].astype(str)), b.df['env_in'][0])"
    ) == "3 [b'alpha', b'beta ', b'gamma'] ['ok', 'ok', 'ok'] {'K': 'v'}\n"
    shell.ok(f"%%fnrun {ECHO} --lines -r 3 -o b\none\ntwo")
    assert shell.out("print(len(b), list(b.df['repeat']))") == "6 [0, 0, 1, 1, 2, 2]\n"
    shell.ok(f"%%fnrun {ECHO} -r 4 -o b\nsame")
    assert shell.out("print(len(b), set(b.df['data']))") == "4 {b'same'}\n"
    shell.ok(f"%%fnrun {ECHO} -r 5 --rate 50 -o b\nx")
    assert shell.out("print(b.df['scheduled'].notna().all(), len(b))") == "True 5\n"


def test_json_one_value_and_list(shell: MagicShell) -> None:
    reply = shell.ok(f'%%fnrun {ECHO} --json -o r\n{{"x": [1, 2], "name": "é"}}\n')
    assert reply["result_type"] == "JsonResult"
    text = reply["outputs"][0]["data"]["text/plain"]
    assert '"x": [\n    1,\n    2\n  ]' in text  # the decoded value, pretty-printed
    assert shell.out("print(r.data.decode(), r.value, r.decoded, r.status)") == (
        '{"x":[1,2],"name":"é"} {\'x\': [1, 2], \'name\': \'é\'} True 200\n'
    )
    # a string is sent as JSON too, so it comes back decoded
    shell.ok(f'%%fnrun {ECHO} --json -o r\n"plain string"')
    assert shell.out("print(r.data, r.decoded, repr(r.value))") == "b'\"plain string\"' True 'plain string'\n"


def test_json_list_is_a_batch_with_decoded_values(shell: MagicShell, tmp_path: Path) -> None:
    reply = shell.ok(f'%%fnrun {MAGIC} -w 2 --json -o b\n["a", 2, {{"k": null}}, "pid"]')
    assert reply["result_type"] == "JsonBatch"
    [out] = reply["outputs"]
    plain, html = out["data"]["text/plain"], out["data"]["text/html"]
    assert plain.startswith(f"4 calls of {MAGIC}: ")
    assert plain.endswith("batch.df: 4 rows × 25 columns\nbatch.values: 4 of 4 results decoded as JSON")
    assert "<code>batch.values</code>: 4 of 4 results decoded as JSON" in html
    assert shell.out(
        "from fnrun_nb.batch import Batch\n"
        "print(isinstance(b, Batch), list(b.df['data']), list(b.values), list(b.decoded))"
    ) == (
        "True [b'\"a\"', b'2', b'{\"k\":null}', b'\"pid\"'] ['a', 2, {'k': None}, 'pid'] "
        "[True, True, True, True]\n"
    )
    # a result that does not parse is None, and decoded tells it from a JSON null
    shell.ok(f"%%fnrun {MAGIC} --lines -o plain\nnull\nnot json")
    assert shell.out(
        "from fnrun_nb.magic_views import json_batch\n"
        "j = json_batch(plain)\n"
        "print(type(j).__name__, list(j.values), list(j.decoded), j.values.index.equals(plain.df.index))"
    ) == "JsonBatch [None, None] [True, False] True\n"
    # save / load: the record is a plain batch record; json_batch decodes a loaded one
    target = tmp_path / "b.parquet"
    out = shell.out(
        f"b.save({str(target)!r})\n"
        f"back = Batch.load({str(target)!r})\n"
        "print(type(back).__name__, back.handler, list(json_batch(back).values) == list(b.values),"
        " back.df.columns.equals(b.df.columns))"
    )
    assert out == f"Batch {MAGIC} True True\n"


def test_monitor_option_and_subcommand_show_the_monitor(shell: MagicShell) -> None:
    reply = shell.ok(f"%%fnrun {ECHO} -w 2 --monitor -o r\nwatched")
    # a terminal shell gets the text monitor: status lines on stderr, the last one final
    lines = reply["stderr"].splitlines()
    assert lines and all(ln.startswith("fnrun ") for ln in lines)
    assert lines[-1].endswith("1 call, 0 failures, 0 replacements")
    assert reply["result_type"] == "Result"
    reply = shell.ok(f"%%fnrun {ECHO} --lines --monitor -o b\na\nb\nc")
    assert reply["stderr"].splitlines()[-1].startswith("fnrun ") and reply["result_type"] == "Batch"
    reply = shell.ok(f"%fnrun monitor {ECHO}")
    assert reply["result_type"] == "TextMonitor"
    [out] = reply["outputs"]
    assert out["data"]["text/plain"].startswith("fnrun echo.py: 2 workers: 2 idle; 4 calls")
    assert '<div class="fnrun-monitor">' in out["data"]["text/html"]


def test_ctrl_c_in_a_batch_keeps_the_partial_batch(shell: MagicShell, tmp_path: Path) -> None:
    mark = tmp_path / "running"
    cell = f"%%fnrun {MAGIC} -w 2 --lines -o part\nmark {mark} 0\n" + "sleep 0.25\n" * 39
    shell.send({"cell": cell})
    wait_for_file(mark)
    time.sleep(1.0)  # a few calls finish; most are still to come
    shell.interrupt()
    reply = shell.receive(60)
    assert reply["error"]["type"] == "KeyboardInterrupt"
    out = shell.out(
        "print(type(part).__name__, part.interrupted, len(part),"
        " 0 < (part.df['outcome'] == 'ok').sum() < 40, (part.df['outcome'] == 'cancelled').sum() > 0)"
    )
    assert out == "Batch True 40 True True\n"
    # the pool is healthy afterwards
    shell.ok(f"%%fnrun {MAGIC} -o r\nstill here")
    assert shell.out("print(r.data)") == "b'still here'\n"


def test_one_pool_per_command_and_directory(shell: MagicShell, tmp_path: Path) -> None:
    handler = (ROOT / ECHO).resolve()
    shell.ok(f"%%fnrun {handler} -w 1 -o a\nx")
    shell.ok(f"import os\nhere = os.getcwd()\nos.chdir({str(tmp_path)!r})")
    try:
        shell.ok(f"%%fnrun {handler} -w 1 -o b\nx")
        shell.ok(f"%%fnrun {handler} -w 1 -o c\nx")
    finally:
        shell.ok("os.chdir(here)")
    assert shell.out("print(a.info.pid != b.info.pid == c.info.pid)") == "True\n"
    table = shell.ok("%fnrun pools")["outputs"][0]["data"]["text/plain"]
    assert len(table.splitlines()) == 3  # header + one row per (command, directory)
    # the same HANDLER in two directories: %fnrun asks which one
    reply = shell.run(f"%fnrun stderr {handler.name}")
    assert usage_error(reply) == (
        f"%fnrun: {handler.name!r} names 2 pools (started in different directories); cd to one of them"
    )


def test_quiet_batch_shows_no_progress_bar(shell: MagicShell) -> None:
    body = "sleep 0.3\n" * 10  # ~1.5 s on two workers: long enough for the bar to appear
    loud = shell.ok(f"%%fnrun {MAGIC} -w 2 --lines -o b\n{body}")
    assert "10/10" in loud["stderr"]  # the progress bar of a batch over a second
    quiet = shell.ok(f"%%fnrun {MAGIC} -w 2 --lines -q -o b\n{body}")
    assert quiet["stderr"] == "" and quiet["stdout"] == "" and quiet["outputs"] == []
    assert shell.out("print(len(b), b.df['outcome'].eq('ok').all())") == "10 True\n"


# --- command lines, names, binary data ------------------------------------------------------


def test_quoted_command_line_is_the_name_everywhere(shell: MagicShell) -> None:
    cmd = f"{os.path.relpath(TEST_HANDLERS / 'delay.py', ROOT)} 0.02"  # a script and its argument
    reply = shell.ok(f'%%fnrun "{cmd}" -w 1 -o d\nslow hello')
    assert reply["result_type"] == "Result"
    # the argument reached the handler: it slept 20 ms
    assert shell.out("print(d.data, d.info.service >= 0.02)") == "b'slow hello' True\n"
    reply = shell.ok(f'%%fnrun "{cmd}" -r 2 -o b\nx')
    assert "restarted" not in reply["stdout"]  # the same pool
    # the pool and its batches carry HANDLER as typed, not this machine's argv
    assert reply["outputs"][0]["data"]["text/plain"].startswith(f"2 calls of {cmd}: ")
    name, handler, pool_repr, batch_repr = shell.out(
        "[e] = get_ipython().magics_manager.registry['FnrunMagics'].entries()\n"
        "print(e.pool.name, b.handler, repr(e.pool), repr(b), sep='\\n')"
    ).splitlines()
    assert name == handler == cmd
    assert pool_repr.startswith(f"<Pool {cmd!r} 1 workers (")
    assert batch_repr.startswith(f"<Batch of {cmd!r}: 2 calls in ")
    # the resolved argv stays on the record, for the saved metadata
    assert shell.out("print(b.command[0] == __import__('sys').executable, b.command[-1])") == "True 0.02\n"
    table = shell.ok("%fnrun pools")["outputs"][0]["data"]["text/plain"]
    assert table.splitlines()[1].startswith(f"{cmd}  ")
    assert shell.out(f'%fnrun stop "{cmd}"') == f"fnrun: stopped 1 pool: {cmd}\n"


def test_binary_data_is_shown_as_a_hex_preview(shell: MagicShell, tmp_path: Path) -> None:
    handler = tmp_path / "unhex.py"
    handler.write_text(UNHEX_HANDLER)
    reply = shell.ok(f"%%fnrun {handler} -w 1 -o r\nff00fe41")
    [out] = reply["outputs"]
    assert out["data"]["text/plain"].startswith("status 200 · 4 bytes (binary)\nff 00 fe 41\n")
    html = out["data"]["text/html"]
    assert "4 bytes (binary, hex)</span>" in html and ">ff 00 fe 41</pre>" in html
    assert shell.out("print(r.data)") == "b'\\xff\\x00\\xfeA'\n"
