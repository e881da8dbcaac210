"""The pure parts of the magics: argument parsing and the value objects, without a shell."""

from __future__ import annotations

import pickle
import signal
from dataclasses import field, fields, make_dataclass

import pytest
from IPython.core.error import UsageError

from fnrun_nb import magic_args
from fnrun_nb.errors import HandlerCrashed, HandlerStartError, InvocationTimeout
from fnrun_nb.magic_args import (
    CellOptions,
    LineCommand,
    encode_json,
    parse_body,
    parse_cell,
    parse_cell_options,
    parse_env,
    parse_line,
    setting_option,
)
from fnrun_nb.magic_views import CallFailed, JsonResult, PoolRow, PoolTable, StderrView
from fnrun_nb.values import CallInfo, Result


def test_options_defaults_mean_not_given() -> None:
    assert parse_cell_options("h.py") == CellOptions(handler="h.py")
    o = parse_cell_options(
        "'node h.js --fast' -w 3 -t 1.5 --wait 0 -e A=1 -e @m -r 2 --lines --rate 9"
        " --monitor -o out --restart"
    )
    assert o == CellOptions(
        handler="node h.js --fast", workers=3, timeout=1.5, wait=0.0, env=("A=1", "@m"),
        repeat=2, lines=True, json=False, rate=9.0, monitor=True, output="out", quiet=False,
        restart=True,
    )
    assert parse_cell_options("h.py -q").quiet is True
    assert parse_cell_options("h.py --json").json is True


def test_every_option_lands_in_the_field_named_as_its_dest() -> None:
    parser = magic_args._cell_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == {f.name for f in fields(CellOptions)}
    # The options that set pool settings, under the settings' own names.
    o = parse_cell_options("h.py -w 2 --wait 0.5 --rate 3")
    assert o.pool_settings() == {"workers": 2, "max_wait": 0.5}
    assert parse_cell_options("h.py -t 9").pool_settings() == {"timeout": 9.0}
    assert [setting_option(s) for s in ("workers", "timeout", "max_wait")] == ["-w", "-t", "--wait"]


def test_a_new_option_needs_one_argument_and_one_field(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a front-end adding options does: append arguments to CELL_ARGUMENTS and a
    # field per argument to CellOptions (one of them a pool setting); nothing else.
    extended = make_dataclass(
        "Extended",
        [
            ("shard", "int | None", field(default=None)),
            ("recycle", "int | None", magic_args._setting("max_calls_per_worker")),
        ],
        bases=(CellOptions,),
        frozen=True,
    )
    monkeypatch.setattr(magic_args, "CellOptions", extended)
    monkeypatch.setattr(magic_args, "CELL_ARGUMENTS", [
        *magic_args.CELL_ARGUMENTS,
        magic_args.argument("--shard", type=int, metavar="N", help="a new option"),
        magic_args.argument("--recycle", type=int, metavar="N", help="a new pool setting"),
    ])
    o = parse_cell_options("h.py -w 2 --shard 3 --recycle 50 -e A=1")
    assert type(o) is extended
    assert (o.shard, o.recycle, o.workers, o.env) == (3, 50, 2, ("A=1",))
    assert o.pool_settings() == {"workers": 2, "max_calls_per_worker": 50}
    assert setting_option("max_calls_per_worker") == "--recycle"
    assert parse_cell_options("h.py").shard is None


def test_env_merges_in_order_and_checks_types() -> None:
    ns = {"m": {"A": "from-m", "B": "b"}, "bad": {"A": 1}}
    assert parse_env(["A=1", "@m", "C=x=y", "D="], ns) == {"A": "from-m", "B": "b", "C": "x=y", "D": ""}
    assert parse_env(["@m", "A=last"], ns) == {"A": "from-m", "B": "b"} | {"A": "last"}
    with pytest.raises(UsageError, match=r"^-e @bad: keys and values must be str, got 'A': 1$"):
        parse_env(["@bad"], ns)
    with pytest.raises(UsageError, match=r"^-e/--env expects KEY=VALUE or @NAME, got '=v'$"):
        parse_env(["=v"], ns)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("hello\n", b"hello"),
        ("hello\n\n", b"hello\n"),
        ("hello\r\n", b"hello"),
        ("  spaced  ", b"  spaced  "),
        ("", b""),
        ("é\n", "é".encode()),
    ],
)
def test_body_is_sent_as_typed_minus_one_newline(body: str, expected: bytes) -> None:
    assert parse_body(body, lines=False, json_mode=False) == ([expected], False)


def test_lines_and_json_bodies() -> None:
    assert parse_body("a\n\n  \n b \n", lines=True, json_mode=False) == ([b"a", b" b "], True)
    # --json sends every value as its compact JSON encoding: a string keeps its quotes
    assert parse_body('{"k": 1}', lines=False, json_mode=True) == ([b'{"k":1}'], False)
    assert parse_body('"hello"', lines=False, json_mode=True) == ([b'"hello"'], False)
    assert parse_body('["s", 2, {"a": [1, null]}, "é", true]', lines=False, json_mode=True) == (
        [b'"s"', b"2", b'{"a":[1,null]}', '"é"'.encode(), b"true"],
        True,
    )


@pytest.mark.parametrize(
    ("value", "sent"),
    [("hello", b'"hello"'), (3, b"3"), ({"a": 1}, b'{"a":1}'), (None, b"null"),
     ("say \"hi\"\n", b'"say \\"hi\\"\\n"'), ([], b"[]")],
)
def test_json_values_are_sent_as_json(value: object, sent: bytes) -> None:
    assert encode_json(value) == sent


def test_json_body_rejects_what_is_not_json() -> None:
    # Python's json module reads NaN; no JSON parser would read it back
    with pytest.raises(UsageError, match=r"^--json: the cell is not valid JSON: NaN is not a JSON value$"):
        parse_body("[1, NaN]", lines=False, json_mode=True)
    with pytest.raises(UsageError, match=r"^--json: the cell is not valid JSON: Infinity is not"):
        parse_body("Infinity", lines=False, json_mode=True)


def test_cell_request_batch_rules() -> None:
    assert parse_cell("h.py", "x\n", {}).batch is False
    req = parse_cell("h.py -r 1", "x\n", {})
    assert (req.batch, req.repeat, req.inputs) == (True, 1, [b"x"])
    req = parse_cell("h.py --lines -e A=1", "x\ny", {})
    assert (req.batch, req.repeat, req.inputs, req.env) == (True, 1, [b"x", b"y"], {"A": "1"})


def test_quiet_cannot_show_the_monitor() -> None:
    with pytest.raises(
        UsageError, match=r"^-q/--quiet displays nothing; it cannot be combined with --monitor$"
    ):
        parse_cell_options("h.py -q --monitor")


def test_line_commands() -> None:
    assert parse_line("") == LineCommand("help")
    assert parse_line("  pools ") == LineCommand("pools")
    assert parse_line("stop") == LineCommand("stop", "all")
    assert parse_line("stop 'node h.js'") == LineCommand("stop", "node h.js")
    assert parse_line("stderr h.py") == LineCommand("stderr", "h.py")
    with pytest.raises(UsageError, match=r"^%fnrun monitor needs a HANDLER$"):
        parse_line("monitor")


def _info() -> CallInfo:
    return CallInfo(worker=1, pid=4242, generation=2, call=3, wait=0.0, service=0.001, started=0.0, deadline=30.0)


def test_json_result_decodes_and_stays_a_result() -> None:
    r = JsonResult.of(Result(200, b'{"a": [1]}', {"E": "1"}, _info()))
    assert (r.value, r.decoded) == ({"a": [1]}, True)
    assert r == Result(200, b'{"a": [1]}', {"E": "1"}) and isinstance(r, Result)
    assert '&quot;a&quot;: [\n    1\n  ]' in r._repr_html_()
    back = pickle.loads(pickle.dumps(r))
    assert isinstance(back, JsonResult) and back.value == {"a": [1]}
    raw = JsonResult.of(Result(200, b"\xff not json"))
    assert (raw.value, raw.decoded) == (None, False)
    with pytest.raises(AttributeError):
        r.value = 1  # type: ignore[misc]


def test_call_failed_rendering() -> None:
    err = HandlerCrashed(
        "handler process 4242 ended (killed by SIGSEGV) before writing a complete Result",
        signal=signal.SIGSEGV,
        stderr_tail="".join(f"line {i}\n" for i in range(30)),
    )
    err.info = _info()
    lines = CallFailed(err, "./h.py")._render_traceback_()
    assert lines[:4] == [
        "HandlerCrashed: handler process 4242 ended (killed by SIGSEGV) before writing a complete Result",
        "  handler: ./h.py",
        "  worker 1, pid 4242, generation 2",
        "  killed by SIGSEGV",
    ]
    assert lines[4] == "  stderr (last 12 lines):" and lines[5] == "    line 18" and lines[16] == "    line 29"
    assert lines[-1] == "  the pool replaced the process; the next call gets a fresh one"
    timeout = CallFailed(InvocationTimeout("call exceeded its 1 s timeout"), "h")
    assert timeout.lines() == [
        "InvocationTimeout: call exceeded its 1 s timeout",
        "  handler: h",
        "  the pool replaced the process; the next call gets a fresh one",
    ]


def test_start_failure_says_its_reason_once() -> None:
    err = HandlerStartError(
        ["/venv/bin/python", "/abs/h.py"],
        "the process ended (exit code 1) before reading its first input; stderr:\n"
        "Traceback (most recent call last):\nModuleNotFoundError: No module named 'x'\n",
    )
    assert CallFailed(err, "h.py").lines() == [
        (
            "HandlerStartError: cannot start the handler: the process ended (exit code 1)"
            " before reading its first input"
        ),
        "  handler: h.py",
        "  command: /venv/bin/python /abs/h.py",  # which interpreter ran is often why
        "  stderr:",
        "    Traceback (most recent call last):",
        "    ModuleNotFoundError: No module named 'x'",
    ]
    # a reason with no stderr is not shown as stderr; an argv equal to HANDLER is not repeated
    bare = HandlerStartError(["/bin/h"], "/bin/h: Permission denied (not executable)")
    assert CallFailed(bare, "/bin/h").lines() == [
        "HandlerStartError: cannot start the handler: /bin/h: Permission denied (not executable)",
        "  handler: /bin/h",
    ]


def test_pool_table_and_stderr_view() -> None:
    assert repr(PoolTable(())) == "no live fnrun pools"
    row = PoolRow("h.py", "/usr/bin/python3 /x/h.py", "/x", 4, 30.0, 5.0, 12, 1, 1, 75.0)
    text = repr(PoolTable((row,)))
    assert text.splitlines()[0].split() == ["command", "workers", "calls", "failures", "uptime"]
    assert text.splitlines()[1].split() == ["h.py", "4", "12", "1", "1m15s"]
    html = PoolTable((row,))._repr_html_()
    assert "<td>1m15s</td>" in html
    assert "/x/h.py" not in html and "/x/h.py" not in text  # machine-specific argv
    view = StderrView("h.py", {1: "", 0: "oops\n"})
    assert repr(view) == "stderr of h.py:\n--- worker 0\noops\n--- worker 1 (empty)"
